"""Fetching the paper's data, with the network replaced by local fixtures:
kagglehub is a stand-in module whose ``dataset_download`` returns a small
folder tree in the Kaggle dataset's layout (tiny generated JPEGs)."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd_utils import __main__ as cli
from kd_utils.tools import commands
from kd_utils import config, data, paths
from kd_utils.experiments import download, notebook

from cli_child import run_cli_cases

#: Images per folder of the fixture.
FIXTURE = {"train/benign": 6, "train/malignant": 5, "test/benign": 3, "test/malignant": 2}


def kaggle_tree(root: Path, counts=FIXTURE) -> Path:
    """``root/melanoma_cancer_dataset/{train,test}/{benign,malignant}/*.jpg``,
    the layout the Kaggle archive unpacks to (distinct 40 px pictures)."""
    for k, (folder, n) in enumerate(counts.items()):
        where = root / "melanoma_cancer_dataset" / folder
        where.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.random.default_rng(100 * k + i).integers(0, 256, (5, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((40, 40), Image.Resampling.BICUBIC).save(where / f"melanoma_{i}.jpg")
    (root / "melanoma_cancer_dataset" / "README.txt").write_text("not an image")
    return root


class FakeKaggle:
    """What the tests need of kagglehub: ``dataset_download`` and the calls made."""

    def __init__(self, cache: Path, error: Exception | None = None):
        self.cache, self.error, self.calls = cache, error, []

    def module(self):
        return types.SimpleNamespace(dataset_download=self.dataset_download)

    def dataset_download(self, handle, **kw):
        self.calls.append((handle, kw))
        if self.error is not None:
            raise self.error
        return str(kaggle_tree(self.cache / handle.replace("/", "_")))


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    fake = FakeKaggle(tmp_path / "kagglehub-cache")
    monkeypatch.setitem(sys.modules, "kagglehub", fake.module())
    return fake


def test_kaggle_download_lands_where_the_paper_profile_reads_and_counts_are_checked(kaggle):
    result = download.download("kaggle", expected=FIXTURE)
    assert kaggle.calls == [(download.KAGGLE_HANDLE, {})]
    dest = paths.data_dir() / "melanoma_cancer_dataset"
    assert result.folder == dest == download.dataset_folder()
    assert result.counts == FIXTURE and result.ok and result.problems == [] and not result.skipped
    assert len(list((dest / "train" / "malignant").glob("*.jpg"))) == 5
    assert not (dest / "README.txt").exists()
    assert "total" in result.summary() and "expected" not in result.summary()
    # The folder source of the paper profile reads it as it is.
    manifest = data.build_manifest("folder", image_size=32, work_dir=dest.parent / "converted")
    assert len(manifest.frame) == sum(FIXTURE.values()) and manifest.split_mode == "folders"


def test_a_count_that_differs_is_reported_folder_by_folder(kaggle):
    result = download.download_kaggle()  # the published counts: the fixture has far fewer
    assert not result.ok
    assert "train/benign: 6 images, expected 5000" in result.problems
    assert len(result.problems) == 4
    text = result.summary()
    assert "expected 4605" in text and "differ from the published dataset in 4 folder(s)" in text


def test_a_second_call_skips_and_a_damaged_copy_is_fetched_again(kaggle):
    first = download.download_kaggle(expected=FIXTURE)
    second = download.download_kaggle(expected=FIXTURE)
    assert len(kaggle.calls) == 1 and second.skipped and second.ok and "nothing downloaded" in second.summary()
    next((first.folder / "test" / "benign").glob("*.jpg")).unlink()
    assert not download.is_complete(first.folder)
    third = download.download_kaggle(expected=FIXTURE)
    assert len(kaggle.calls) == 2 and not third.skipped and third.counts == FIXTURE
    download.download_kaggle(expected=FIXTURE, force=True)
    assert kaggle.calls[-1] == (download.KAGGLE_HANDLE, {"force_download": True})


class HTTPError(Exception):
    def __init__(self, status):
        super().__init__(f"{status} Client Error")
        self.response = types.SimpleNamespace(status_code=status)


@pytest.mark.parametrize("error, words", [
    (ConnectionError("Failed to resolve 'api.kaggle.com'"), ["network connection", "Failed to resolve", "by hand"]),
    (HTTPError(401), ["credentials", "kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY"]),
    (HTTPError(404), ["does not know hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images"]),
], ids=["offline", "refused", "not-found"])
def test_a_failed_download_says_what_to_do(tmp_path, monkeypatch, error, words):
    fake = FakeKaggle(tmp_path / "cache", error=error)
    monkeypatch.setitem(sys.modules, "kagglehub", fake.module())
    with pytest.raises(download.DownloadError) as info:
        download.download_kaggle()
    for word in words:
        assert word in str(info.value)
    assert download.KAGGLE_URL in str(info.value)
    assert not download.dataset_folder().exists()


def test_without_kagglehub_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub raises ImportError
    with pytest.raises(download.DownloadError, match=r"pip install kagglehub"):
        download.download_kaggle()
    assert isinstance(download.DownloadError("x"), data.DataError)  # the command line's exit 2


def test_an_unexpected_layout_is_explained(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=lambda h: str(flat)))
    with pytest.raises(download.DownloadError, match="no folder there holds train/ and test/"):
        download.download_kaggle()


def test_isic_reuses_isic_cli_and_explains_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(download.shutil, "which", lambda name: None)
    with pytest.raises(download.DownloadError, match="pip install isic-cli"):
        download.download("isic", tmp_path / "isic")
    monkeypatch.setattr(download.shutil, "which", lambda name: "/bin/false")  # as isic-cli offline: exit 1
    with pytest.raises(download.DownloadError, match="exit status 1.*network connection"):
        download.download("isic", tmp_path / "isic")
    (tmp_path / "isic" / "metadata.csv").write_text("isic_id,benign_malignant\nISIC_1,benign\nISIC_2,malignant\n")
    done = download.download("isic", tmp_path / "isic")
    assert done.skipped and done.counts == {"images": 2} and done.ok
    with pytest.raises(data.DataError, match="exit status 1"):  # forced: the folder is fetched again
        download.download_isic(tmp_path / "isic", force=True)


def test_notebook_01_fetches_only_for_the_paper_profile(kaggle):
    for name in ("smoke", "cpu", config.DRY_RUN):
        assert download.ensure_data(config.get_profile(name)) is None
    # a paper profile pointed at its own folder (the dry run's stand-ins) is not downloaded into
    assert download.ensure_data(config.get_profile("paper", data_root="/somewhere/else")) is None
    assert kaggle.calls == [] and not paths.data_dir().exists()
    paper = config.get_profile("paper")
    fetched = download.ensure_data(paper)
    assert fetched.folder == download.dataset_folder() and len(kaggle.calls) == 1
    assert download.ensure_data(paper) is None and len(kaggle.calls) == 1  # there now


def test_a_folder_filled_by_hand_is_left_alone(kaggle):
    kaggle_tree(paths.data_dir(), {"train/benign": 2, "train/malignant": 2, "test/benign": 1, "test/malignant": 1})
    assert download.ensure_data(config.get_profile("paper")) is None and kaggle.calls == []


# --------------------------------------------------------------------------- command line


def test_cli_download_prints_counts_and_exit_code_follows_the_check(kaggle, monkeypatch, capsys, tmp_path):
    assert cli.main(["download", "--out", str(tmp_path / "ds")]) == commands.EXIT_SOME_FAILED
    out, err = capsys.readouterr()
    assert "train/benign" in out and "expected 5000" in out
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    monkeypatch.setattr(download, "KAGGLE_COUNTS", FIXTURE)
    assert cli.main(["download", "--out", str(tmp_path / "ds")]) == commands.EXIT_OK
    assert "already complete" in capsys.readouterr().out


def test_cli_download_usage_errors_exit_2_in_one_line_before_tensorflow(tmp_path):
    (tmp_path / "a_file").write_text("a file where a folder belongs")
    cases = {
        "source": (["download", "--source", "drive"], ["--source", "invalid choice: 'drive'", "kaggle", "isic"]),
        "limit-kaggle": (["download", "--limit", "10"], ["--limit applies to --source isic only"]),
        "limit-0": (["download", "--source", "isic", "--limit", "0"], ["--limit", "whole number >= 1"]),
        "out-file": (["download", "--out", str(tmp_path / "a_file")], ["--out", "is a file, not a folder"]),
        "no-kagglehub": (["download", "--out", str(tmp_path / "ds")], ["pip install kagglehub", download.KAGGLE_URL]),
    }
    results = run_cli_cases([(k, v[0]) for k, v in cases.items()], ("tensorflow", "keras", "kagglehub"),
                            {"KD_DATA_DIR": str(tmp_path / "data")})
    for case_id, (_, words) in cases.items():
        result = results[case_id]
        lines = result["stderr"].splitlines()
        assert result["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case_id, result)
        for word in words:
            assert word in lines[0], (case_id, word, lines[0])
        assert result["stdout"] == ""
    assert results["_modules"] == []
    assert not (tmp_path / "ds").exists()


def test_reproduce_on_a_gpu_without_the_images_stops_in_one_line_when_the_download_fails(monkeypatch, capsys):
    """A GPU never trains on generated images: auto picks paper, the download
    fails, and reproduce stops before any notebook with the reason (exit 2)."""
    from kd_utils import __main__ as cli

    monkeypatch.setattr(notebook, "has_gpu", lambda: True)
    monkeypatch.setattr(notebook, "kaggle_reachable", lambda timeout=3.0: False)

    class Offline:
        @staticmethod
        def dataset_download(handle, **kwargs):
            raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(download, "_import_kagglehub", lambda: Offline)
    ran = []
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: ran.append(a))
    assert cli.main(["reproduce", "--only", "01"]) == 2
    out, err = capsys.readouterr()
    assert "Profile paper: a GPU" in out and ran == []
    assert err.count("\n") == 1 and err.startswith("error: Could not download " + download.KAGGLE_HANDLE)


def test_a_data_mistake_inside_a_notebook_ends_reproduce_with_one_line(monkeypatch, capsys, tmp_path):
    """The Kaggle folder holds benign images only: notebook 01 cannot build a
    manifest, and reproduce says so in one line with exit 2, not a traceback."""
    folder = paths.data_dir() / download.DATASET_FOLDER
    for split in ("train", "test"):
        (folder / split / "benign").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((64, 64, 3), 40 * i + 20, np.uint8)).save(folder / split / "benign" / f"{i}.png")
    monkeypatch.setenv("KD_RESULTS", str(tmp_path / "results"))
    assert cli.main(["reproduce", "--profile", "paper", "--only", "01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: 01_data_preparation.ipynb stopped: Expected class folders benign/ and malignant/")
