"""TFLite export of a Keras model, and the images int8 calibrates on.

Export (:func:`export_tflite`) goes through the public route that works with
Keras 3: the model's inference call (``training=False``) is written as a
SavedModel endpoint with ``keras.export.ExportArchive`` and converted with
``tf.lite.TFLiteConverter.from_saved_model`` (variables are frozen into
constants on the way). Three variants:

* ``"none"``    - float32 weights and activations; the same numbers as Keras
  up to float rounding. Input float32 raw pixels in [0, 255], output float32
  logits.
* ``"dynamic"`` - dynamic-range quantization: weights stored as int8,
  activations computed in float. Input and output float32 as above.
* ``"int8"``    - full integer quantization calibrated on representative
  images (the project draws them from the TRAINING split). Input **uint8**,
  output int8 logits with their scale and zero point.

Why uint8 input for ``"int8"``: the model's contract is raw RGB pixels in
[0, 255], and uint8 with scale 1 and zero point 0 holds exactly those values,
so a decoded image feeds in unchanged (int8 input would need every pixel
shifted by -128). Calibration sets the input scale from the smallest and
largest values it sees, so the first calibration image gets one black (0)
and one white (255) pixel: the input range is then exactly [0, 255] and the

The exported file runs in :func:`kd_utils.tools.deploy.load_model`, as the
``.keras`` file does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .. import batches
from .deploy import PREDICT_SUFFIXES, ImageReadError, expand_paths, keras_model, model_input_size, read_image

QUANTIZATIONS = ("none", "dynamic", "int8")
#: Images read from a folder given to ``export --calibration`` for int8: at least, at most.
CALIBRATION_RANGE = (100, 500)


def check_quantize(quantize: str) -> str:
    """``quantize`` if it is one of :data:`QUANTIZATIONS`, else a ValueError saying which are."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantize={quantize!r}; expected one of {', '.join(QUANTIZATIONS)} "
            "(none: float32, dynamic: int8 weights, int8: full integer with representative images)."
        )
    return quantize


def _representative_array(images, image_size: int) -> np.ndarray:
    """Representative images as one uint8 array ``(n, size, size, 3)``; ValueError when unusable."""
    if images is None:
        raise ValueError(
            "quantize='int8' needs representative_images: ~100-200 uint8 images of shape "
            f"({image_size}, {image_size}, 3) from the training split (see representative_images())."
        )
    if isinstance(images, np.ndarray):
        array = images
    else:
        items = [np.asarray(image) for image in images]
        shapes = sorted({item.shape for item in items})
        if len(shapes) > 1:
            raise ValueError(f"representative_images differ in shape ({shapes[:3]}); resize them to the model's input.")
        array = np.stack(items) if items else np.zeros((0, image_size, image_size, 3), np.uint8)
    if array.ndim != 4 or array.shape[0] == 0 or array.shape[1:] != (image_size, image_size, 3):
        raise ValueError(
            f"representative_images must be a non-empty batch of ({image_size}, {image_size}, 3) images "
            f"(the model's input size); got shape {array.shape}."
        )
    return np.clip(array, 0, 255).astype(np.uint8)


def export_tflite(model, out_path, quantize: str = "none", representative_images=None) -> Path:
    """Write ``model`` (a keras.Model or a ``.keras`` path) as a ``.tflite`` file.

    ``quantize``: ``"none"`` (float32), ``"dynamic"`` (int8 weights, float
    activations) or ``"int8"`` (full integer: uint8 input, int8 output; needs
    ``representative_images``, an array or iterable of uint8 images at the
    model's input size, ~100-200 from the training split). See the module
    docstring for the input/output types. Returns the written path; the batch
    dimension stays dynamic.
    """
    check_quantize(quantize)
    import keras
    import tensorflow as tf

    model = keras_model(model)
    size = model_input_size(model)
    representative = _representative_array(representative_images, size) if quantize == "int8" else None
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="kd_export_") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda images: model(images, training=False),
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="image")],
        )
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if quantize in ("dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            converter.representative_dataset = _calibration_batches(representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.int8
        flatbuffer = converter.convert()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(flatbuffer)
    return out_path


def _calibration_batches(images: np.ndarray):
    """The converter's representative dataset: one float32 image per step.

    The first image gets a black and a white pixel so that the calibrated
    input range is exactly [0, 255] (input scale 1, zero point 0).
    """

    def generate():
        for i, image in enumerate(images):
            image = image.astype(np.float32)
            if i == 0:
                image[0, 0, :] = 0.0
                image[0, min(1, image.shape[1] - 1), :] = 255.0
            yield [image[None]]

    return generate


class CalibrationError(ValueError):
    """Too few usable calibration images; the message says how many and why."""


def calibration_images(folder, image_size: int, n_range=CALIBRATION_RANGE, seed: int = 0):
    """Representative images for int8 from a folder of any source: ``(images, skipped)``.

    The folder is searched like ``predict`` does (:func:`expand_paths`) and
    every file is read and checked as ``predict`` reads it
    (:func:`read_image`: EXIF applied, too small / elongated / unreadable
    files skipped). Files are taken in a seeded random order until
    ``n_range[1]`` images are read; ``skipped`` lists ``(path, reason)`` of
    the files passed over. :class:`CalibrationError` when fewer than
    ``n_range[0]`` are usable.
    """
    low, high = n_range
    folder = Path(folder)
    files = [p for p in expand_paths(folder) if p.is_file()]
    order = np.random.default_rng(seed).permutation(len(files))
    images, skipped = [], []
    for i in order:
        if len(images) >= high:
            break
        try:
            images.append(read_image(files[i], image_size))
        except ImageReadError as err:
            skipped.append((str(files[i]), str(err)))
    if len(images) < low:
        example = f"; e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise CalibrationError(
            f"--calibration {folder}: {len(images)} usable image(s) of {len(files)} "
            f"{'/'.join(PREDICT_SUFFIXES)} file(s) ({len(skipped)} refused{example}); "
            f"int8 calibration needs {low} to {high} images like the ones the model will see."
        )
    return np.stack(images), skipped


def representative_images(manifest, image_size: int, n: int = 200, split: str = "train", seed: int = 0) -> np.ndarray:
    """Up to ``n`` images of ``split`` (seeded sample, both classes in proportion), uint8."""
    rows = manifest.split(split)
    if rows.empty:
        raise ValueError(f"The {split} split is empty: no representative images.")
    take = np.sort(np.random.default_rng(seed).permutation(len(rows))[: min(n, len(rows))])
    return np.stack([batches.load_image(str(path), image_size).numpy() for path in rows.path.values[take]])
