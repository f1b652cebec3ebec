"""Which profile this machine runs, and what the setup cell of every notebook
does once the project is installed.

The cell itself only fetches and installs the project on Colab (a few lines
a reader can see fail); :func:`start` does the rest, the same in all seven
notebooks: on Colab it points ``KD_ROOT`` at the checkout and, with
``USE_DRIVE``, mounts Google Drive and keeps artifacts and results there
(the images stay on the machine's fast local disk); everywhere it makes the
profile from the parameters cell and says where things go. ``auto`` chooses
the profile from the machine (:func:`auto_profile`), for the notebooks and
the command line alike.
"""

from __future__ import annotations

import os
import sys

from .. import config, paths

#: Where the Kaggle dataset is downloaded from: :func:`auto_profile` asks
#: whether this host answers before it plans a run on data not yet on disk.
KAGGLE_HOST = "www.kaggle.com"


def kaggle_reachable(timeout: float = 3.0) -> bool:
    """Whether a connection to :data:`KAGGLE_HOST` opens within ``timeout`` s."""
    import socket

    try:
        socket.create_connection((KAGGLE_HOST, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def auto_profile() -> tuple[str, str]:
    """``(profile name, reason)``, as the command line and the notebooks
    (``PROFILE = "auto"``) choose:

    * ``$KD_PROFILE`` when set;
    * a GPU: ``paper``, on the real images; when they are missing, notebook
      01 (or ``reproduce``) downloads them, and a failed download stops with
      its reason - a GPU never trains on generated images;
    * no GPU: ``kaggle-cpu`` when the real images are on disk or Kaggle
      answers (they are then downloaded);
    * generated images (``cpu``) only when neither, and the reason says so.
    """
    if os.environ.get("KD_PROFILE"):
        return os.environ["KD_PROFILE"], "set by KD_PROFILE"
    kaggle = paths.data_dir() / config.KAGGLE_FOLDER
    here = kaggle.is_dir()
    if has_gpu():
        where = f"the Kaggle images in {kaggle}" if here else f"the Kaggle images, downloaded to {kaggle}"
        return "paper", f"a GPU: the paper's profile on {where}"
    if here:
        return config.REAL_CPU, f"no GPU: the Kaggle images in {kaggle}, small and from scratch"
    if kaggle_reachable():
        return config.REAL_CPU, f"no GPU: the Kaggle images, downloaded to {kaggle}, small and from scratch"
    return "cpu", (f"no GPU, no real images in {kaggle} and Kaggle cannot be reached: GENERATED images, "
                   "not real lesions (every table says 'data synthetic'; see data/README.md to get the real ones)")


def _names(value: str | tuple) -> tuple[str, ...]:
    """``"a, b"`` or ``("a", "b")`` as a tuple of stripped, non-empty strings."""
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(str(p).strip() for p in parts if str(p).strip())


def notebook_profile(name: str | None = "auto", seeds: str | tuple = "", mixed_precision: bool = False,
                     jit: bool = False, students: str | tuple = "") -> config.Profile:
    """The profile a notebook's parameters cell asks for: ``"auto"`` (or None)
    chooses as :func:`auto_profile` and prints why; ``seeds`` ("10,11" or a
    tuple; empty: the profile's), ``mixed_precision``, ``jit`` (XLA) and
    ``students`` (large students of Table 2, "MobileNet,EfficientNetB0" or a
    tuple; empty: ``$KD_SEEDS`` / ``$KD_STUDENTS`` if set, else the profile's)
    override the profile. Overrides are printed."""
    seeds = seeds or os.environ.get("KD_SEEDS", "")
    students = students or os.environ.get("KD_STUDENTS", "")
    if name in (None, "", "auto"):
        name, why = auto_profile()
        print(f"profile {name}: {why}")
    overrides = {}
    if seeds:
        overrides["seeds"] = tuple(int(s) for s in _names(seeds))
    if mixed_precision:
        overrides["mixed_precision"] = True
    if jit:
        overrides["jit_compile"] = True
    if students:
        overrides["students"] = _names(students)
    profile = config.get_profile(name, **overrides)
    if overrides:
        shown = {k: ", ".join(map(str, v)) if isinstance(v, tuple) else "on" for k, v in overrides.items()}
        print(f"profile {profile.name} with " + "; ".join(f"{k} {v}" for k, v in shown.items()))
    return profile


#: Where the setup cell clones the project on Colab.
COLAB_CHECKOUT = "/content/kd-melanoma"
#: The Drive folder that holds artifacts and results with ``USE_DRIVE``.
DRIVE_FOLDER = "/content/drive/MyDrive/kd-melanoma"


def on_colab() -> bool:
    return "google.colab" in sys.modules


def start(profile: str = "auto", use_drive: bool = False, seeds: str = "", mixed_precision: bool = False,
          jit: bool = False, students: str = ""):
    """``(profile, results folder)`` for the parameters cell's values (see
    :func:`notebook_profile`), after the Colab-only steps."""
    if on_colab():
        os.environ.setdefault("KD_ROOT", COLAB_CHECKOUT)
        if use_drive:
            from google.colab import drive

            drive.mount("/content/drive")
            os.environ["KD_ARTIFACTS"] = f"{DRIVE_FOLDER}/artifacts"
            os.environ["KD_RESULTS"] = f"{DRIVE_FOLDER}/results"
    elif use_drive:
        print("USE_DRIVE is for Colab: artifacts and results stay in this machine's folders.")
    chosen = notebook_profile(profile, seeds, mixed_precision, jit, students)
    results = paths.results_dir(chosen)
    from ..reporting import hardware

    print(f"profile {chosen.name} on {hardware()}")
    print(f"artifacts: {paths.artifacts_dir(chosen)}")
    print(f"tables and figures: {results}")
    return chosen, results
