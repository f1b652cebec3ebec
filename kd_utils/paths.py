"""Where the project's folders are: the checkout, the data, the artifacts, the results.

Environment variables (read on every call, never at import):

* ``KD_DATA_DIR``  - where datasets are downloaded / generated
  (default ``<root>/data``).
* ``KD_ARTIFACTS`` - where models, logs and records go
  (default ``<root>/artifacts``); on Colab this may point at Drive.
* ``KD_RESULTS``   - where tables, figures and executed notebooks go
  (default ``<root>/results``); on Colab this may point at Drive.
* ``KD_ROOT``      - the project folder, e.g. the checkout when the package
  is installed from it non-editably (Colab); see :func:`repo_root`.

``<root>`` is :func:`repo_root`: the checkout when there is one, else
``./kd-melanoma/`` in the working directory - never the installed package's
folder and never ``notebooks/``. Relative paths in the variables are
resolved from it, not from the working directory, so notebooks (which run
inside ``notebooks/``) and the command line see the same folders.
"""

from __future__ import annotations

import os
from pathlib import Path


#: Where the project lives on GitHub: the notebooks' Colab badges and install
#: cells use this URL (a test checks they agree). Forks change it here.
REPO_URL = "https://github.com/kd-melanoma/kd-melanoma"


#: Where data, artifacts and results go when there is no checkout (a plain
#: ``pip install``) and no ``KD_ROOT``: this folder in the working directory.
INSTALLED_ROOT_NAME = "kd-melanoma"


def _is_checkout(folder: Path) -> bool:
    """A clone of this project: its ``pyproject.toml`` names it and ``kd_utils/`` is there."""
    project = folder / "pyproject.toml"
    if not (project.is_file() and (folder / "kd_utils").is_dir()):
        return False
    try:
        return 'name = "kd-melanoma"' in project.read_text()
    except OSError:
        return False


def repo_root() -> Path:
    """The project folder, which holds ``data/``, ``artifacts/`` and ``results/``.

    In order: ``$KD_ROOT``; the checkout this package sits in (run from a
    clone, or an editable install); the checkout the working directory lies
    in (an installed copy used from inside a clone, e.g. from its
    ``notebooks/``); else ``./kd-melanoma`` in the working directory (a plain
    ``pip install`` without a clone). Nothing is created here: the folders
    appear when something is written to them.
    """
    if os.environ.get("KD_ROOT"):
        return Path(os.environ["KD_ROOT"]).expanduser().resolve()
    here = Path(__file__).resolve().parent.parent
    if _is_checkout(here):
        return here
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_checkout(folder):
            return folder
    return cwd / INSTALLED_ROOT_NAME


def installed_sample_dir() -> Path:
    """Where a wheel puts the sample: ``kd_utils/sample`` (pyproject's ``package-dir``)."""
    return Path(__file__).resolve().parent / "sample"


def sample_dir() -> Path:
    """The bundled 24-image CC0 ISIC sample: the checkout's ``data/sample``,
    else the copy installed with the package; an error that says so otherwise."""
    in_root = repo_root() / "data" / "sample"
    for folder in (in_root, installed_sample_dir()):
        if (folder / "labels.csv").is_file():
            return folder
    raise FileNotFoundError(
        f"The 24-image sample is neither in {in_root} nor installed with the package "
        f"({installed_sample_dir()}): this installation of kd_utils does not carry data/sample. "
        f"Install kd-melanoma from a wheel or clone of {REPO_URL} (both carry it), or set KD_ROOT "
        "to a clone."
    )


def _resolve(value: str | os.PathLike | None, default: Path) -> Path:
    if not value:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo_root() / path


def data_dir() -> Path:
    """Folder for downloaded or generated datasets (``$KD_DATA_DIR``)."""
    return _resolve(os.environ.get("KD_DATA_DIR"), repo_root() / "data")


def artifacts_dir(profile=None) -> Path:
    """``$KD_ARTIFACTS/<profile>`` (default ``<root>/artifacts/<profile>``)."""
    root = _resolve(os.environ.get("KD_ARTIFACTS"), repo_root() / "artifacts")
    if profile is None:
        return root
    name = profile if isinstance(profile, str) else profile.name
    return root / name


def results_dir(profile) -> Path:
    """``$KD_RESULTS/<profile>`` (default ``<root>/results/<profile>``): the
    tables and figures a profile produced (on Colab with Drive: on Drive)."""
    name = profile if isinstance(profile, str) else profile.name
    return _resolve(os.environ.get("KD_RESULTS"), repo_root() / "results") / name
