"""kd_utils - shared code of the kd-melanoma notebooks.

Knowledge distillation from a ResNet50 teacher into DSNet (268,898
parameters) for benign (0) vs malignant (1) dermoscopic images, after Khan et
al., "Knowledge Distillation approach towards Melanoma Detection" (2022).

Modules: ``config`` (profiles, paths), ``data`` (sources -> manifest ->
tf.data), ``synthetic`` (offline dermoscopy-like images), ``models``,
``distillation`` (the Distiller), ``training``, ``evaluation``.
TensorFlow is imported by the modules that need it, not by this package.
"""

__version__ = "0.1.0"
