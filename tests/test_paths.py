"""Where the project's folders are: the checkout, an installed copy, the environment variables."""

import pytest

from kd_utils import paths


def test_paths_resolve_from_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KD_ARTIFACTS", "my_artifacts")
    monkeypatch.delenv("KD_RESULTS")  # the default, below
    root = paths.repo_root()
    assert (root / "kd_utils" / "config.py").is_file()
    assert paths.artifacts_dir("cpu") == root / "my_artifacts" / "cpu"
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "d"))
    assert paths.data_dir() == tmp_path / "d"
    monkeypatch.delenv("KD_DATA_DIR")
    assert paths.data_dir() == root / "data"
    assert paths.sample_dir() == root / "data" / "sample"
    assert paths.results_dir("smoke") == root / "results" / "smoke"


def test_an_installed_copy_finds_the_checkout_through_kd_root(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_ROOT", str(tmp_path))
    (tmp_path / "data" / "sample").mkdir(parents=True)
    (tmp_path / "data" / "sample" / "labels.csv").write_text("filename,label\n")
    assert paths.repo_root() == tmp_path.resolve()
    assert paths.sample_dir() == tmp_path.resolve() / "data" / "sample"
    monkeypatch.delenv("KD_ARTIFACTS")
    assert paths.artifacts_dir("paper") == tmp_path.resolve() / "artifacts" / "paper"


def _installed_copy(monkeypatch, tmp_path, with_sample=True):
    """kd_utils as a plain ``pip install`` lays it out: site-packages/kd_utils, no
    pyproject.toml beside it; the sample (if packaged) in kd_utils/sample."""
    package = tmp_path / "site-packages" / "kd_utils"
    package.mkdir(parents=True)
    (package / "paths.py").write_text("")
    if with_sample:
        (package / "sample").mkdir()
        (package / "sample" / "labels.csv").write_text("filename,label\n")
    monkeypatch.setattr(paths, "__file__", str(package / "paths.py"))
    for name in ("KD_ROOT", "KD_DATA_DIR", "KD_ARTIFACTS", "KD_RESULTS"):
        monkeypatch.delenv(name, raising=False)
    return package


def test_without_a_checkout_everything_goes_to_kd_melanoma_in_the_working_directory(monkeypatch, tmp_path):
    package = _installed_copy(monkeypatch, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root = work.resolve() / "kd-melanoma"
    assert paths.repo_root() == root
    assert paths.data_dir() == root / "data"
    assert paths.artifacts_dir("cpu") == root / "artifacts" / "cpu"
    assert paths.results_dir("cpu") == root / "results" / "cpu"
    for path in (paths.data_dir(), paths.artifacts_dir("cpu"), paths.results_dir("cpu")):
        assert package.parent not in path.parents  # never inside site-packages
    assert not root.exists()  # created only when something is written
    assert paths.sample_dir() == package.resolve() / "sample"  # the copy in the wheel
    monkeypatch.setenv("KD_ARTIFACTS", "runs")
    assert paths.artifacts_dir("cpu") == root / "runs" / "cpu"


def test_an_installed_copy_used_inside_a_clone_writes_into_the_clone_not_notebooks(monkeypatch, tmp_path):
    _installed_copy(monkeypatch, tmp_path)
    clone = tmp_path / "clone"
    for folder in ("kd_utils", "notebooks", "data/sample"):
        (clone / folder).mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "kd-melanoma"\n')
    (clone / "data" / "sample" / "labels.csv").write_text("filename,label\n")
    monkeypatch.chdir(clone / "notebooks")
    assert paths.repo_root() == clone.resolve()
    assert paths.results_dir("paper") == clone.resolve() / "results" / "paper"
    assert paths.sample_dir() == clone.resolve() / "data" / "sample"
    # another project's folder is not taken for a clone
    (clone / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    assert paths.repo_root() == clone.resolve() / "notebooks" / "kd-melanoma"


def test_an_installation_without_the_sample_says_so(monkeypatch, tmp_path):
    _installed_copy(monkeypatch, tmp_path, with_sample=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not carry data/sample.*KD_ROOT"):
        paths.sample_dir()


def test_the_wheel_carries_the_sample_as_kd_utils_sample():
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((paths.repo_root() / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "kd_utils.sample" in setuptools["packages"]
    assert setuptools["package-dir"]["kd_utils.sample"] == "data/sample"
    assert "labels.csv" in setuptools["package-data"]["kd_utils.sample"]
    assert paths.installed_sample_dir() == paths.repo_root() / "kd_utils" / "sample"
