"""kd_utils - shared code of the kd-melanoma notebooks.

Knowledge distillation from a ResNet50 teacher into DSNet (268,898
parameters) for benign (0) vs malignant (1) dermoscopic images, after Khan et
al., "Knowledge Distillation approach towards Melanoma Detection" (2022).

The method, what the notebooks teach: ``models`` (teacher, DSNet, large
students), ``distillation`` (the Distiller), ``training`` (one run, resumable),
``sources`` / ``images`` / ``data`` (files -> a validated manifest),
``batches`` (manifest -> tf.data), ``evaluation``, ``stats``, ``reporting``,
``plots``. Running the paper's steps: ``config`` (profiles), ``paths``
(where data, artifacts and results go), ``pipeline``
(data, teacher, students), ``runs`` (a run's key, folder and record),
``choices`` (sweeps, choices on validation), ``storage``, ``memory``,
``shard``, ``notebook``. Tooling: ``__main__`` (the command line's
options), ``commands`` (what each command does), ``deploy``,
``tflite_export``, ``external``, ``shortcuts``, ``duplicates``,
``model_card``, ``benchmark``, ``flops``, ``estimate``, ``steptime``, ``download``,
``dry_run``, ``synthetic``. docs/design.md has the map and what each may
import.
TensorFlow is imported by the modules that need it, not by this package.
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) hides the
# output that matters in notebooks and logs; errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
