"""kd_utils - shared code of the kd-melanoma notebooks.

Knowledge distillation from a ResNet50 teacher into DSNet (268,898
parameters) for benign (0) vs malignant (1) dermoscopic images, after Khan et
al., "Knowledge Distillation approach towards Melanoma Detection" (2022).

Three parts, each importing only from those before it (docs/design.md has
the map):

* the core, what the notebooks teach: ``models`` (teacher, DSNet, large
  students), ``distillation`` (the Distiller), ``training`` (one run,
  resumable), ``sources`` / ``images`` / ``data`` (files -> a validated
  manifest), ``batches`` (manifest -> tf.data), ``evaluation``, ``stats``,
  ``reporting``, ``plots``, ``paper`` (the paper's own numbers), with
  ``config`` (profiles), ``paths``,
  ``storage`` and ``synthetic`` (generated images);
* ``kd_utils.experiments``, running the paper's steps: ``pipeline``,
  ``runs``, ``choices``, ``memory``, ``shard``, ``notebook``, ``download``,
  ``dry_run``;
* ``kd_utils.tools``: ``commands`` (behind ``__main__``, the command line),
  ``deploy``, ``tflite_export``, ``model_card``, ``benchmark``, ``flops``,
  ``estimate``, ``steptime``, ``external``, ``shortcuts``, ``screen``, ``duplicates``.

TensorFlow is imported by the modules that need it, not by this package.
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) hides the
# output that matters in notebooks and logs; errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
