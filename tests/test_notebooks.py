"""The notebooks as files: structure, checked cells, and that nbval does catch a change."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kd_utils import config, paths

NOTEBOOKS = sorted((paths.repo_root() / "notebooks").glob("0*.ipynb"))
EXPECTED = [
    "01_data_preparation",
    "02_teacher_resnet50",
    "03_distill_dsnet",
    "04_temperature_sweep",
    "05_pretrained_students",
    "06_results_and_figures",
    "07_baselines_ablation_calibration",
]


def load(path):
    return json.loads(Path(path).read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_seven_notebooks_are_there_in_order():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    nb = load(path)
    cells = code_cells(nb)
    assert cells[0]["metadata"].get("tags") == ["parameters"]
    params = "".join(cells[0]["source"])
    for form_field in ('PROFILE = "auto"  #@param', "USE_DRIVE = False  #@param", 'SEEDS = ""  #@param',
                       "MIXED_PRECISION = False  #@param", "JIT = False  #@param", 'STUDENTS = ""  #@param'):
        assert form_field in params
    profile_field = next(line for line in params.splitlines() if line.startswith("PROFILE ="))
    assert all(f'"{name}"' in profile_field for name in config.PROFILE_NAMES)
    setup = "".join(cells[1]["source"])
    assert f'REPO_URL = "{paths.REPO_URL}"' in setup  # the URL lives in paths.REPO_URL
    assert "pip install -q /content/kd-melanoma" in setup and "pip install -e" not in setup  # no restart needed
    assert "your fork's URL" in setup and "raise SystemExit(done.stdout" in setup
    assert "notebook.start(PROFILE, USE_DRIVE, SEEDS, MIXED_PRECISION, JIT, STUDENTS)" in setup
    assert len(setup.splitlines()) <= 22 and setup == "".join(code_cells(load(NOTEBOOKS[0]))[1]["source"])
    assert nb["metadata"]["accelerator"] == "GPU"
    ids = [c.get("id") for c in nb["cells"]]  # nbformat 4.5 requires them; a missing one is a warning today
    assert None not in ids and len(set(ids)) == len(ids), f"{path.name}: a cell without an id, or two alike"
    assert f"colab.research.google.com/github/{paths.REPO_URL.split('github.com/')[1]}/blob/main/notebooks/{path.name}" in "".join(nb["cells"][0]["source"])
    for cell in cells:
        src = "".join(cell["source"])
        if "NBVAL_CHECK_OUTPUT" in src:
            assert cell["outputs"], f"checked cell without stored output in {path.name}"
        else:
            assert cell["outputs"] == [], f"{path.name} stores output of an unchecked cell"
        assert not any(o.get("name") == "stderr" for o in cell["outputs"])


def checked_text(name):
    return "".join(
        "".join(o.get("text", ""))
        for c in code_cells(load(paths.repo_root() / "notebooks" / f"{name}.ipynb"))
        if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])
        for o in c["outputs"]
    )


def test_checked_cells_hold_the_papers_facts():
    assert "23,600,002 params, 23,542,786 trainable, 57,216 non-trainable" in checked_text("02_teacher_resnet50")
    dsnet = checked_text("03_distill_dsnet")
    assert "268,898 trainable params" in dsnet
    assert re.search(r"^3\s+0\.410\s+0\.590$", dsnet, re.M)  # the paper's 0.41 / 0.59 at T = 3
    counts = checked_text("01_data_preparation")
    assert "profile smoke" in counts and "total" in counts  # counts are labelled, never results


def test_readme_has_a_colab_badge_per_notebook():
    readme = (paths.repo_root() / "README.md").read_text()
    for name in EXPECTED:
        assert f"{paths.REPO_URL.replace('https://github.com/', 'https://colab.research.google.com/github/')}/blob/main/notebooks/{name}.ipynb" in readme


def _nbval(path):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider", str(path)],
        capture_output=True, text=True, cwd=path.parent, timeout=300,
    )


def test_nbval_fails_when_a_checked_value_changes(tmp_path):
    """The CI set-up really compares checked cells: a wrong stored count fails."""
    cell = nbformat.v4.new_code_cell(  # DSNet's count, worked out in the kernel (no model: no TensorFlow to import)
        "# NBVAL_CHECK_OUTPUT\nprint(f\"{sum([268_000, 898]):,}\")",
        execution_count=1,
    )
    unchecked = nbformat.v4.new_code_cell("print('anything')", execution_count=2)
    for stored, ok in (("268,898\n", True), ("268,899\n", False)):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
        unchecked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="something else\n")]
        nb = nbformat.v4.new_notebook(cells=[cell, unchecked])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path / f"check_{ok}.ipynb"
        nbformat.write(nb, path)
        result = _nbval(path)
        assert (result.returncode == 0) is ok, result.stdout[-2000:]
        if not ok:
            assert "268,899" in result.stdout and "268,898" in result.stdout
