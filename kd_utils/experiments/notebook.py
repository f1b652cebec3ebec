"""What the setup cell of every notebook does once the project is installed.

The cell itself only fetches and installs the project on Colab (a few lines
a reader can see fail); :func:`start` does the rest, the same in all seven
notebooks: on Colab it points ``KD_ROOT`` at the checkout and, with
``USE_DRIVE``, mounts Google Drive and keeps artifacts and results there
(the images stay on the machine's fast local disk); everywhere it makes the
profile from the parameters cell and says where things go.
"""

from __future__ import annotations

import os
import sys

from .. import config, paths

#: Where the setup cell clones the project on Colab.
COLAB_CHECKOUT = "/content/kd-melanoma"
#: The Drive folder that holds artifacts and results with ``USE_DRIVE``.
DRIVE_FOLDER = "/content/drive/MyDrive/kd-melanoma"


def on_colab() -> bool:
    return "google.colab" in sys.modules


def start(profile: str = "auto", use_drive: bool = False, seeds: str = "", mixed_precision: bool = False,
          jit: bool = False, students: str = ""):
    """``(profile, results folder)`` for the parameters cell's values (see
    :func:`kd_utils.config.notebook_profile`), after the Colab-only steps."""
    if on_colab():
        os.environ.setdefault("KD_ROOT", COLAB_CHECKOUT)
        if use_drive:
            from google.colab import drive

            drive.mount("/content/drive")
            os.environ["KD_ARTIFACTS"] = f"{DRIVE_FOLDER}/artifacts"
            os.environ["KD_RESULTS"] = f"{DRIVE_FOLDER}/results"
    elif use_drive:
        print("USE_DRIVE is for Colab: artifacts and results stay in this machine's folders.")
    chosen = config.notebook_profile(profile, seeds, mixed_precision, jit, students)
    results = paths.results_dir(chosen)
    from ..reporting import hardware

    print(f"profile {chosen.name} on {hardware()}")
    print(f"artifacts: {paths.artifacts_dir(chosen)}")
    print(f"tables and figures: {results}")
    return chosen, results
