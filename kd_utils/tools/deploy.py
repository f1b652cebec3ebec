"""Deployment: one runner for ``.keras`` and ``.tflite`` files, prediction on image files.

The TFLite export itself is :mod:`kd_utils.tools.tflite_export`.

Running (:func:`load_model`): ``.keras`` files run in Keras, ``.tflite`` files
in the LiteRT interpreter (``ai_edge_litert``); both give float logits
``(n, 2)`` for a batch of uint8 images, quantization handled inside. A file
that is not a model (truncated, another format) raises :class:`ModelFileError`
("damaged or not a Keras/TFLite model"), and so does a model that does not
take one square RGB image and give two class logits (benign, malignant).

Prediction on files (:func:`predict_paths`) reads JPEG / PNG of any size and
mode (grayscale, RGBA, palette, 16-bit) with :func:`kd_utils.batches.load_image`,
the reader of the training pipeline: the same decoder and the same
antialiased resize to the model's input size, so a file gives the same
pixels here as in training. Pillow checks every file first (a truncated
JPEG must be an error, not a half-grey image) and converts what TensorFlow
cannot decode. Images are refused when training would have excluded them:
shorter than :data:`kd_utils.images.MIN_SIDE` (32 px) on a side or more
elongated than :data:`kd_utils.images.MAX_ASPECT` (4:1). EXIF orientation is
applied before resizing, as the manifest builder does for training.

Importing this module does not import TensorFlow (the command line checks
its arguments first); the functions that need it import it.

The outputs are research results, not diagnoses (:data:`DISCLAIMER`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import batches, data, images

CLASS_NAMES = data.CLASS_NAMES  # ("benign", "malignant"): the model's outputs 0 and 1

MODEL_SUFFIXES = (".keras", ".tflite")
#: Files a directory given to :func:`predict_paths` is searched for (any case).
PREDICT_SUFFIXES = (".jpg", ".jpeg", ".png")
DISCLAIMER = (
    "Research tool, not a diagnostic device: these outputs must not be used for clinical decisions."
)


# --------------------------------------------------------------------------- Keras models


def keras_model(model):
    import keras

    from .. import models  # noqa: F401  (registers Preprocess for loading)

    if isinstance(model, keras.Model):
        _check_keras_outputs(model)
        return model
    path = _check_model_path(model)
    if path.suffix.lower() != ".keras":
        raise ValueError(f"Only Keras models (.keras) can be exported; got {path}.")
    return _load_keras(path)


class ModelFileError(ValueError):
    """A model file that cannot be used here; the message names the file and says why."""


def _damaged(path, reason) -> ModelFileError:
    reason = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return ModelFileError(f"{path}: damaged or not a Keras/TFLite model ({reason}).")


def _load_keras(path: Path):
    """keras.saving.load_model with the errors of a bad file as :class:`ModelFileError`."""
    import zipfile

    import keras

    from .. import models  # noqa: F401  (registers Preprocess for loading)

    if not zipfile.is_zipfile(path):  # Keras would say "File not found" for a file that exists
        raise _damaged(path, "not a .keras zip archive: truncated, or another format")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001  (Keras raises many types for bad archives; the reason is kept)
        raise _damaged(path, f"{type(err).__name__}: {err}") from err
    _check_keras_outputs(model, path)
    return model


def _two_class_problem(shapes) -> str | None:
    """Why a model with these output shapes is not a benign/malignant classifier, or None."""
    shapes = [tuple(s) for s in shapes]
    if len(shapes) != 1:
        return f"it has {len(shapes)} outputs"
    shape = shapes[0]
    if len(shape) != 2:
        return f"its output has shape {shape}"
    if shape[-1] != 2:
        return f"it gives {shape[-1]} value(s) per image"
    return None


def _refuse_outputs(where, problem: str) -> ModelFileError:
    return ModelFileError(
        f"{where}: not a two-class model: {problem}; expected one output of 2 logits per image, "
        "shape (n, 2), class 0 benign and class 1 malignant."
    )


def _check_keras_outputs(model, path=None) -> None:
    try:
        shapes = [tuple(out.shape) for out in model.outputs]
    except (AttributeError, TypeError, ValueError):  # a subclassed model that was never called
        return
    problem = _two_class_problem(shapes)
    if problem:
        raise _refuse_outputs(path or getattr(model, "name", "model"), problem)


def ends_in_softmax(model) -> bool:
    """Whether a Keras model's output is already a probability: its last
    layer is a ``Softmax`` layer or has the softmax activation. The project's
    models output logits; a model from elsewhere may not."""
    import keras

    try:
        layer = model.layers[-1]
    except (AttributeError, IndexError):
        return False
    # Dense(..., activation="softmax") and Activation("softmax") both hold keras.activations.softmax.
    return isinstance(layer, keras.layers.Softmax) or getattr(layer, "activation", None) is keras.activations.softmax


def model_input_size(model, path=None) -> int:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        where = f"{path}: e" if path else "E"
        raise ModelFileError(f"{where}xpected a model for square RGB images (None, size, size, 3); got input {shape}.")
    return int(shape[1])


# --------------------------------------------------------------------------- runners


def _check_model_path(path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ValueError(
            f"Unsupported model file {path}: expected a .keras (Keras) or .tflite (LiteRT) file, "
            f"got suffix {path.suffix or '(none)'!r}."
        )
    if not path.exists():
        raise FileNotFoundError(f"Model file {path} does not exist.")
    if not path.is_file():
        raise ValueError(f"Model file {path} is a folder, not a .keras or .tflite file.")
    return path


def _as_batch(images, image_size: int) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1:] != (image_size, image_size, 3):
        raise ValueError(
            f"Expected images of shape (n, {image_size}, {image_size}, 3) with raw pixels in [0, 255]; "
            f"got {array.shape}."
        )
    return array


class KerasRunner:
    """A Keras model behind the runner interface (graph-compiled inference call)."""

    format = "keras"

    def __init__(self, model, path=None):
        import tensorflow as tf

        self.model = model
        self.path = Path(path) if path is not None else None
        _check_keras_outputs(model, self.path)
        self.image_size = model_input_size(model, self.path)
        #: The model gives probabilities, not logits: their logarithms are returned
        #: as logits (a softmax of them gives the probabilities back).
        self.probabilities = ends_in_softmax(model)
        spec = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec])  # one trace, any batch

    def predict_logits(self, images, batch_size: int = 64) -> np.ndarray:
        """Float32 logits ``(n, 2)`` for uint8 (or float) raw-pixel images."""
        batch = _as_batch(images, self.image_size)
        out = [
            np.asarray(self._call(batch[i : i + batch_size].astype(np.float32)))
            for i in range(0, len(batch), batch_size)
        ]
        logits = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2), np.float32)
        return np.log(np.clip(logits, 1e-12, 1.0)) if self.probabilities else logits


class TFLiteRunner:
    """A ``.tflite`` file in the LiteRT interpreter; quantized inputs/outputs handled."""

    format = "tflite"

    def __init__(self, path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        with open(self.path, "rb") as handle:
            head = handle.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":  # the flatbuffer's file identifier
            raise _damaged(self.path, "no TFLite flatbuffer header: truncated, or another format")
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise _damaged(self.path, err) from err
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        problem = _two_class_problem(
            [tuple(int(s) for s in out.get("shape_signature", out["shape"])) for out in outputs]
        )
        if problem:
            raise _refuse_outputs(self.path, problem)
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one image input; the model has {len(inputs)} inputs.")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(int(s) for s in self._input["shape"])
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelFileError(f"{self.path}: expected an input of shape (batch, size, size, 3); got {shape}.")
        self.image_size = shape[1]
        self.input_dtype = np.dtype(self._input["dtype"])
        self.input_quantization = tuple(self._input["quantization"])  # (scale, zero point)
        self.output_dtype = np.dtype(self._output["dtype"])
        self.output_quantization = tuple(self._output["quantization"])
        self._batch = shape[0]
        #: The file's last operation is a softmax: it gives probabilities (see ``KerasRunner``).
        self.probabilities = _ends_in_softmax_op(self.interpreter, self._output["index"])

    def _quantize(self, batch: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if not np.issubdtype(dtype, np.integer):
            return batch.astype(dtype)
        scale, zero_point = self.input_quantization
        values = batch.astype(np.float64)
        if scale:
            values = np.round(values / scale + zero_point)
        info = np.iinfo(dtype)
        return np.clip(values, info.min, info.max).astype(dtype)

    def _dequantize(self, output: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output_quantization
        if np.issubdtype(self.output_dtype, np.integer) and scale:
            return ((output.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return output.astype(np.float32)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()

    def predict_logits(self, images, batch_size: int = 64) -> np.ndarray:
        """Float32 logits ``(n, 2)`` for uint8 raw-pixel images, any batch size."""
        batch = self._quantize(_as_batch(images, self.image_size))
        out = [self._dequantize(self._invoke(batch[i : i + batch_size])) for i in range(0, len(batch), batch_size)]
        logits = np.concatenate(out) if out else np.zeros((0, 2), np.float32)
        return np.log(np.clip(logits, 1e-12, 1.0)).astype(np.float32) if self.probabilities else logits


def _ends_in_softmax_op(interpreter, output_index: int) -> bool:
    """Whether a SOFTMAX operation writes the interpreter's output tensor."""
    try:
        operations = interpreter._get_ops_details()
    except AttributeError:  # an interpreter without it: read the output as logits, as before
        return False
    return any(op.get("op_name") == "SOFTMAX" and output_index in list(op.get("outputs", ()))
               for op in operations)


def load_model(path, num_threads: int | None = None):
    """A runner for a ``.keras`` or ``.tflite`` file: ``.image_size``, ``.predict_logits(images)``.

    ``num_threads`` applies to the LiteRT interpreter (default: its own choice).
    Raises FileNotFoundError for a missing file, ValueError for another
    suffix and :class:`ModelFileError` for a damaged file or a model that is
    not a two-class image classifier.
    """
    path = _check_model_path(path)
    if path.suffix.lower() == ".tflite":
        return TFLiteRunner(path, num_threads=num_threads)
    return KerasRunner(_load_keras(path), path)


def _runner(model):
    """A runner from a runner, an in-memory keras.Model or a model file."""
    if hasattr(model, "predict_logits"):
        return model
    if hasattr(model, "input_shape") and hasattr(model, "layers"):  # a keras.Model
        return KerasRunner(model)
    return load_model(model)


# --------------------------------------------------------------------------- comparison


def compare_on_split(keras_model_path, tflite_paths, manifest, split: str = "test", batch_size: int = 64):
    """Accuracy and malignant AUC of a Keras model and its exported copies on one split.

    Returns a DataFrame, one row per model (the Keras model first), with
    ``format``, ``size_bytes``, ``accuracy``, ``auc_malignant``,
    ``accuracy_loss`` (Keras accuracy minus this model's, in accuracy points
    as a fraction), ``agreement`` (share of images with the same predicted
    class as Keras), ``max_prob_diff`` (largest difference in malignant
    probability from Keras) and ``seconds`` (model time for the split).
    """
    import pandas as pd

    from .. import evaluation

    reference = _runner(keras_model_path)
    runners = [reference, *(_runner(p) for p in ([tflite_paths] if isinstance(tflite_paths, (str, Path)) else tflite_paths))]
    for runner in runners[1:]:
        if runner.image_size != reference.image_size:
            raise ValueError(
                f"{runner.path} takes {runner.image_size}px images, the Keras model {reference.image_size}px."
            )
    dataset = batches.make_dataset(manifest, split, reference.image_size, batch_size, shuffle=False, cache=False)
    logits = [[] for _ in runners]
    seconds = [0.0 for _ in runners]
    labels = []
    for pixels, y in dataset:
        pixels = pixels.numpy()
        labels.append(np.argmax(y.numpy(), axis=-1))
        for k, runner in enumerate(runners):
            start = time.perf_counter()
            logits[k].append(runner.predict_logits(pixels))
            seconds[k] += time.perf_counter() - start
    labels = np.concatenate(labels)
    rows = []
    ref_logits = np.concatenate(logits[0]).astype(np.float64)
    ref_prob = evaluation.softmax(ref_logits)[:, 1]
    for k, runner in enumerate(runners):
        out = np.concatenate(logits[k]).astype(np.float64)
        record = evaluation.metrics_from_predictions(evaluation.Predictions(labels, out, seconds[k]))
        path = Path(runner.path) if runner.path is not None else None
        rows.append(
            {
                "model": path.name if path else f"model {k}",
                "format": runner.format,
                "size_bytes": path.stat().st_size if path and path.is_file() else None,
                "n": record["n"],
                "accuracy": record["accuracy"],
                "auc_malignant": record["auc"].get("malignant", float("nan")),
                "agreement": float(np.mean(np.argmax(out, axis=-1) == np.argmax(ref_logits, axis=-1))),
                "max_prob_diff": float(np.max(np.abs(evaluation.softmax(out)[:, 1] - ref_prob))),
                "seconds": seconds[k],
            }
        )
    frame = pd.DataFrame(rows)
    frame["accuracy_loss"] = frame.accuracy.iloc[0] - frame.accuracy
    return frame


# --------------------------------------------------------------------------- prediction on files


class ImageReadError(ValueError):
    """A file could not be read as an image; the message says why."""


@dataclasses.dataclass
class ImageResult:
    """The model's output for one file, or why there is none."""

    path: str
    malignant_probability: float | None = None
    label: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def read_image(path, image_size: int) -> np.ndarray:
    """One file as uint8 ``(size, size, 3)``; ImageReadError (with the reason) if unusable.

    Pillow checks the file first (unknown format, truncated data) and its
    size as shown (EXIF orientation applied): shorter than
    :data:`~kd_utils.images.MIN_SIDE` on a side or more elongated than
    :data:`~kd_utils.images.MAX_ASPECT` is refused, as training excludes it.
    JPEG and PNG files of any mode stored upright are then read by
    :func:`kd_utils.batches.load_image` itself, the reader of the training
    pipeline (TensorFlow decodes gray, palette, alpha and 16-bit files to
    8-bit RGB); files with an EXIF orientation, other formats, and the rare
    JPEG/PNG TensorFlow cannot decode (CMYK), are converted to upright 8-bit
    RGB with Pillow (:func:`kd_utils.images.upright_rgb8`, as the manifest
    builder converts them for training) and resized the same way.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageReadError("file not found")
    if not path.is_file():
        raise ImageReadError("not a file")
    try:
        with Image.open(path) as image:
            image.load()  # raises on truncated or corrupt data, which TensorFlow may decode silently
            problem = images.size_problem(*images.shown_size(image))
            direct = image.format in ("JPEG", "PNG") and images.exif_orientation(image) == 1
            rgb = None if direct or problem else np.asarray(images.upright_rgb8(image))
    except UnidentifiedImageError:
        raise ImageReadError("not an image (unknown format)") from None
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"image too large: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"unreadable or truncated image: {err}") from None
    if problem:
        raise ImageReadError(f"{problem}: the model was not trained on such images")
    if rgb is None:
        import tensorflow as tf

        try:
            return batches.load_image(str(path), image_size).numpy()
        except tf.errors.OpError:  # a file Pillow reads but TensorFlow does not
            with Image.open(path) as image:
                rgb = np.asarray(images._to_rgb8(image))
    return batches.resize_image(rgb, image_size).numpy()


def expand_paths(paths_or_dirs) -> list[Path]:
    """Files to predict: files as given, directories searched recursively for
    .jpg/.jpeg/.png (any case, hidden files skipped), sorted per directory.

    A directory without such files is kept as it is, so that it gets an error entry.
    """
    if isinstance(paths_or_dirs, (str, Path)):
        paths_or_dirs = [paths_or_dirs]
    files = []
    for item in paths_or_dirs:
        item = Path(item)
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in PREDICT_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
            files.extend(found or [item])
        else:
            files.append(item)
    return files


def predict_paths(paths_or_dirs, model, batch_size: int = 32, threshold: float = 0.5) -> list[ImageResult]:
    """Malignant probability and label for every image file (directories expanded).

    ``model`` is a ``.keras`` / ``.tflite`` path or a runner from
    :func:`load_model`. The label is ``malignant`` when the probability is at
    least ``threshold``. A file that cannot be read gets an ``error`` entry;
    the others still run. Results follow :func:`expand_paths`' order.
    """
    from .. import evaluation

    runner = _runner(model)
    results = [ImageResult(str(p)) for p in expand_paths(paths_or_dirs)]
    pending: list[tuple[ImageResult, np.ndarray]] = []

    def flush():
        if not pending:
            return
        logits = runner.predict_logits(np.stack([image for _, image in pending]))
        for (result, _), p in zip(pending, evaluation.softmax(logits)[:, 1]):
            result.malignant_probability = float(p)
            result.label = CLASS_NAMES[int(p >= threshold)]
        pending.clear()

    for result in results:
        path = Path(result.path)
        if path.is_dir():
            result.error = f"no {'/'.join(PREDICT_SUFFIXES)} files in this directory"
            continue
        try:
            pending.append((result, read_image(path, runner.image_size)))
        except ImageReadError as err:
            result.error = str(err)
        if len(pending) >= batch_size:
            flush()
    flush()
    return results


def results_frame(results: Iterable[ImageResult]):
    """The results as a DataFrame (``path``, ``malignant_probability``, ``label``, ``error``)."""
    import pandas as pd

    return pd.DataFrame([dataclasses.asdict(r) for r in results], columns=["path", "malignant_probability", "label", "error"])
