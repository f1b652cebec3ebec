"""kd_utils - shared code of the kd-melanoma notebooks.

Knowledge distillation from a ResNet50 teacher into DSNet (268,898
parameters) for benign (0) vs malignant (1) dermoscopic images, after Khan et
al., "Knowledge Distillation approach towards Melanoma Detection" (2022).

Modules: ``config`` (profiles, paths), ``data`` (sources -> manifest ->
tf.data), ``synthetic`` (offline dermoscopy-like images), ``models``,
``distillation`` (the Distiller), ``training``, ``evaluation``.
TensorFlow is imported by the modules that need it, not by this package.
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) hides the
# output that matters in notebooks and logs; errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
