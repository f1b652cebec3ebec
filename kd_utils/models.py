"""The teacher, DSNet and the six keras.applications students.

Every model built here

* takes the same input: a batch of raw RGB images, values in [0, 255]
  (uint8 or float), shape ``(batch, size, size, 3)``;
* carries its own preprocessing as its first layer (:class:`Preprocess`), so
  callers never need to know which ``preprocess_input`` a backbone expects;
* outputs LOGITS (``Dense(2)`` without activation). Apply a softmax for
  probabilities; the distillation loss needs the logits.

Class 0 is benign, class 1 malignant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import keras
from keras import layers, ops

NUM_CLASSES = 2
CLASS_NAMES = ("benign", "malignant")

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were asked for but could not be downloaded."""


@keras.saving.register_keras_serializable(package="kd_utils")
class Preprocess(layers.Layer):
    """Maps raw RGB in [0, 255] to what a backbone expects. No weights.

    Modes (the same arithmetic as the matching ``keras.applications``
    ``preprocess_input`` functions):

    * ``caffe`` - RGB to BGR, minus the ImageNet channel means
      (ResNet50, ResNet101, VGG16);
    * ``tf``    - scale to [-1, 1] (MobileNet, InceptionV3);
    * ``none``  - unchanged (EfficientNetB0 normalises inside the backbone);
    * ``unit``  - scale to [0, 1] (DSNet).
    """

    MODES = ("caffe", "tf", "none", "unit")

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}; expected one of {self.MODES}.")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="kd_utils")
class ShadesOfGray(layers.Layer):
    """Colour constancy inside the model (Finlayson and Trezzi, 2004). No weights.

    Each image's illuminant is estimated per channel as the ``p``-norm mean
    of its pixels (p = 1 is grey world, p -> infinity white patch; 6 as the
    ISIC 2019 winners used) and divided out, scaled so that a grey
    illuminant changes nothing: a colour cast of the camera or the light is
    removed, the lesion's own colours relative to its skin are kept. Raw
    [0, 255] in, [0, 255] out; computed in float32 whatever the dtype policy
    (255 ** 6 overflows float16). Inside the model, so that ``predict``,
    ``evaluate`` and the TFLite export apply it too.
    """

    def __init__(self, p: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        if not p >= 1:
            raise ValueError(f"p must be at least 1, got {p!r}.")
        self.p = float(p)

    def call(self, inputs):
        x = ops.cast(inputs, "float32") / 255.0
        illuminant = ops.power(ops.mean(ops.power(x, self.p), axis=(1, 2), keepdims=True) + 1e-12, 1.0 / self.p)
        grey = ops.sqrt(ops.mean(ops.square(illuminant), axis=-1, keepdims=True))  # (1, 1, 1) -> 1
        x = ops.clip(x * grey / (illuminant + 1e-6), 0.0, 1.0) * 255.0
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "p": self.p}


def _raw_input(image_size: int, color_constancy: bool):
    """``(inputs, x)``: the model's uint8-range image input and, with
    ``color_constancy``, that image after :class:`ShadesOfGray`."""
    inputs = _input(image_size)
    return inputs, ShadesOfGray(name="shades_of_gray")(inputs) if color_constancy else inputs


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """How to build one keras.applications backbone."""

    constructor: Callable[..., keras.Model]
    preprocess: str
    min_size: int


#: The registry of pretrained students (paper, Table 2). The teacher is the
#: ResNet50 entry with the same head.
BACKBONES: dict[str, StudentSpec] = {
    "MobileNet": StudentSpec(keras.applications.MobileNet, "tf", 32),
    "VGG16": StudentSpec(keras.applications.VGG16, "caffe", 32),
    "InceptionV3": StudentSpec(keras.applications.InceptionV3, "tf", 75),
    "EfficientNetB0": StudentSpec(keras.applications.EfficientNetB0, "none", 32),
    "ResNet50": StudentSpec(keras.applications.ResNet50, "caffe", 32),
    "ResNet101": StudentSpec(keras.applications.ResNet101, "caffe", 32),
}

#: The file keras.applications downloads for each backbone's ImageNet weights
#: without the classifier, under the name it keeps in ``~/.keras/models``
#: (MobileNet: the 224 px file). A profile whose ``weights`` is a folder
#: builds each backbone with the file of this name in it.
WEIGHTS_FILES = {
    "MobileNet": "mobilenet_1_0_224_tf_no_top.h5",
    "VGG16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "InceptionV3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "EfficientNetB0": "efficientnetb0_notop.h5",
    "ResNet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet101": "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
}

#: Smallest input DSNet accepts: three valid 3x3 convolutions and two poolings
#: must leave at least one pixel.
DSNET_MIN_SIZE = 18


def _input(image_size: int) -> keras.KerasTensor:
    return keras.Input(shape=(image_size, image_size, 3), name="image")


def _backbone(name: str, image_size: int, weights: str | None) -> keras.Model:
    spec = BACKBONES[name]
    if image_size < spec.min_size:
        raise ValueError(
            f"{name} needs images of at least {spec.min_size}x{spec.min_size}; got {image_size}. "
            f"Use a profile with image_size >= {spec.min_size}."
        )
    source = weights_source(name, weights)
    try:
        return spec.constructor(
            include_top=False, weights=source, input_shape=(image_size, image_size, 3)
        )
    except Exception as err:  # keras raises a bare Exception on URL errors
        if weights == "imagenet" and _looks_like_download_failure(err):
            raise WeightsUnavailableError(
                f"Could not download the ImageNet weights of {name} ({err}). "
                "This machine seems to have no network access. Either build the model "
                "with weights=None (the 'cpu' and 'smoke' profiles do), or run where "
                "the weights can be downloaded (Colab), or copy the weight file into "
                "~/.keras/models/ beforehand."
            ) from err
        raise


def weights_source(name: str, weights: str | None) -> str | None:
    """What the keras.applications constructor of backbone ``name`` gets as
    ``weights``: ``"imagenet"``, ``None``, or - when ``weights`` is a folder -
    the path of the backbone's file in it (:data:`WEIGHTS_FILES`), which
    Keras loads itself (the same loading as for its downloaded file)."""
    if weights in (None, "imagenet"):
        return weights
    folder = Path(weights).expanduser()
    if not folder.is_dir():
        raise ValueError(f"weights must be 'imagenet', None or a folder of weights files; got {weights!r}, "
                         f"which is {'a file' if folder.exists() else 'not there'}.")
    path = folder / WEIGHTS_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"No weights file for {name} in {folder}: {path.name} is missing. The folder must hold the "
            f"notop ImageNet files of keras.applications under their own names ({', '.join(WEIGHTS_FILES.values())}); "
            f"the paper profile's dry run (python -m kd_utils reproduce --profile paper --dry-run) makes stand-ins."
        )
    return str(path)


def _looks_like_download_failure(err: BaseException) -> bool:
    import urllib.error

    if isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError)):
        return True
    text = str(err)
    return "URL fetch failure" in text or "HTTP" in text or "urlopen" in text


def _classifier_head(x, dropout: float):
    """The paper's head: GAP -> Dropout(0.5) -> BatchNorm -> Dense(2) logits."""
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    return layers.Dense(NUM_CLASSES, name="logits")(x)


def build_student(
    name: str,
    image_size: int = 224,
    weights: str | None = None,
    dropout: float = 0.5,
    color_constancy: bool = False,
) -> keras.Model:
    """A student by name: ``"DSNet"`` or one of :data:`BACKBONES`.

    keras.applications students get the teacher's head on top of the backbone
    without its classifier. ``color_constancy``: :class:`ShadesOfGray` first.
    """
    if name.lower() == "dsnet":
        return build_dsnet(image_size, color_constancy=color_constancy)
    if name not in BACKBONES:
        known = ", ".join(("DSNet", *BACKBONES))
        raise ValueError(f"Unknown student {name!r}; expected one of: {known}.")
    inputs, x = _raw_input(image_size, color_constancy)
    x = Preprocess(BACKBONES[name].preprocess, name="preprocess")(x)
    x = _backbone(name, image_size, weights)(x)
    outputs = _classifier_head(x, dropout)
    return keras.Model(inputs, outputs, name=name.lower())


def build_teacher(
    image_size: int = 224, weights: str | None = "imagenet", dropout: float = 0.5, color_constancy: bool = False
) -> keras.Model:
    """The paper's teacher: ResNet50 + GAP + Dropout(0.5) + BN + Dense(2).

    At 224x224: 23,600,002 parameters, 23,542,786 trainable.
    """
    model = build_student("ResNet50", image_size=image_size, weights=weights, dropout=dropout,
                          color_constancy=color_constancy)
    model.name = "teacher_resnet50"
    return model


def build_dsnet(image_size: int = 224, dropout: float = 0.25, color_constancy: bool = False) -> keras.Model:
    """DSNet exactly as the paper: three valid 3x3 convolutions, 268,898 params at 224.

    Conv(128)-MaxPool-Conv(64)-MaxPool-Conv(32)-Dropout(0.25)-Flatten-Dense(2).
    Inputs are scaled to [0, 1] inside the model (no weights involved).
    """
    if image_size < DSNET_MIN_SIZE:
        raise ValueError(f"DSNet needs images of at least {DSNET_MIN_SIZE}x{DSNET_MIN_SIZE}; got {image_size}.")
    inputs, x = _raw_input(image_size, color_constancy)
    x = Preprocess("unit", name="preprocess")(x)
    x = layers.Conv2D(128, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv3")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="dsnet")


def count_params(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts."""
    trainable = sum(int(ops.size(w)) for w in model.trainable_weights)
    non_trainable = sum(int(ops.size(w)) for w in model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}
