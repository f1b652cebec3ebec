"""Manifest -> ``tf.data`` pipelines: decode, resize, shuffle per epoch, batch,
and the training-time views (the square's symmetries; the shortcut-breaking
:func:`robust_view`), each drawn from the run's seed, the epoch and the
image's place, so a resumed run sees the same batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .sources import DataError

if TYPE_CHECKING:
    from .data import Manifest

def load_image(path, image_size: int):
    """Read, decode (JPEG/PNG, 3 channels) and resize one image; stays uint8.

    TensorFlow's decoder ignores EXIF orientation: the files it gets are
    upright already (:func:`build_manifest` stores rotated files upright in
    ``work_dir``, ``deploy.read_image`` rotates them with Pillow).
    """
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize_image(image, image_size)


def resize_image(image, image_size: int):
    """Antialiased resize of an RGB image to ``image_size`` squared, rounded back to uint8."""
    import tensorflow as tf

    resized = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def make_dataset(
    manifest: Manifest,
    split: str,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool | None = None,
    seed: int = 0,
    cache: bool | str = True,
    teacher_logits: np.ndarray | None = None,
    shuffle_buffer: int = 2048,
    per_epoch: bool = False,
    augment: str | None = None,
):
    """Batches of ``(uint8 images, one-hot float labels)`` for one split.

    * ``shuffle`` defaults to True for ``train`` only. The file list is
      permuted once (seeded) before decoding and a bounded buffer reshuffles
      every epoch, so memory does not depend on the dataset's size.
    * ``cache``: True keeps decoded, resized uint8 images in memory after the
      first epoch; a file path caches on disk instead; False decodes every epoch.
    * ``teacher_logits`` (one row per image of the split, in manifest order)
      turns the inputs into ``{"images": ..., "teacher_logits": ...}`` for the
      :class:`~kd_utils.distillation.Distiller` to skip the teacher.
    * ``per_epoch=True`` (with shuffling) returns an :class:`EpochDataset`:
      ``for_epoch(k)`` is epoch ``k``'s batches, in an order fixed by ``seed``
      and ``k`` alone, so a resumed run sees the batches an uninterrupted one
      would (:func:`kd_utils.training.fit` uses it).
    * ``augment="dihedral"`` (with ``per_epoch``): each image of epoch ``k``
      is flipped and turned by a multiple of 90 degrees (:func:`dihedral`),
      drawn from ``(seed, k)`` and its place in the epoch alone - as
      reproducible as the order. A lesion has no up or left: the eight
      symmetries of the square change nothing a label depends on.
      ``augment="robust"``: those, and the shortcut-breaking changes of
      :func:`robust_view`.
    """
    import tensorflow as tf

    from .distillation import IMAGES_KEY, TEACHER_LOGITS_KEY

    rows = manifest.split(split)
    if rows.empty:
        raise DataError(f"The {split} split is empty.")
    shuffle = (split == "train") if shuffle is None else shuffle
    order = np.random.default_rng(seed).permutation(len(rows)) if shuffle else np.arange(len(rows))
    columns = {"path": rows.path.values[order], "label": rows.label.values[order].astype(np.int32)}
    if teacher_logits is not None:
        teacher_logits = np.asarray(teacher_logits, dtype=np.float32)
        if teacher_logits.shape != (len(rows), 2):
            raise ValueError(f"teacher_logits must have shape ({len(rows)}, 2) for the {split} split; got {teacher_logits.shape}.")
        columns["teacher_logits"] = teacher_logits[order]
    ds = tf.data.Dataset.from_tensor_slices(columns)

    def decode(row):
        out = dict(row)
        out["image"] = load_image(row["path"], image_size)
        del out["path"]
        return out

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))

    def to_xy(batch):
        y = tf.one_hot(batch["label"], 2, dtype=tf.float32)
        if "teacher_logits" in batch:
            return {IMAGES_KEY: batch["image"], TEACHER_LOGITS_KEY: batch["teacher_logits"]}, y
        return batch["image"], y

    def batched(examples):
        return examples.batch(batch_size).map(to_xy, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    buffer = min(shuffle_buffer, len(rows))
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {list(AUGMENTATIONS)}, got {augment!r}.")
    if augment and not (shuffle and per_epoch):
        raise ValueError("augment needs a shuffled per-epoch training split (per_epoch=True).")
    if shuffle and per_epoch:
        return EpochDataset(ds, buffer, seed, batched, augment)
    if shuffle:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return batched(ds)


class EpochDataset:
    """A training split whose epoch ``k`` is reshuffled from ``(seed, k)`` alone.

    All epochs share one decoded (cached) copy of the images; only the
    shuffle differs.
    """

    def __init__(self, examples, buffer: int, seed: int, finish, augment: str | None = None):
        self._examples, self._buffer, self._seed, self._finish = examples, buffer, int(seed), finish
        self._view = AUGMENTATIONS[augment]

    def for_epoch(self, epoch: int):
        seed = (self._seed * 1_000_003 + int(epoch)) % (2**31 - 1)
        examples = self._examples.shuffle(self._buffer, seed=seed, reshuffle_each_iteration=False)
        if self._view is not None:
            view = self._view
            examples = examples.enumerate().map(lambda i, ex: {**ex, "image": view(ex["image"], seed, i)})
        return self._finish(examples)


def dihedral(image, seed: int, index):
    """``image`` flipped left-right or not and turned by 0, 90, 180 or 270
    degrees: one of the square's eight symmetries, drawn from ``(seed, index)``."""
    import tensorflow as tf

    draw = tf.random.stateless_uniform([2], seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)]),
                                       maxval=8, dtype=tf.int64)[0]
    image = tf.cond(draw >= 4, lambda: tf.image.flip_left_right(image), lambda: image)
    return tf.image.rot90(image, k=tf.cast(draw % 4, tf.int32))


#: Entries of :data:`ROBUST` that change nothing at these values: left out of
#: the run keys then (:func:`kd_utils.experiments.runs.view_config`), so runs
#: from before the entry existed keep their keys.
ROBUST_NEUTRAL = {"channel_gain": (1.0, 1.0)}

#: What :func:`robust_view` draws, per training image and epoch, for both classes alike.
ROBUST = {
    "zoom": (0.75, 4 / 3),        # out (black around the shrunk image) or in, log-uniform, anywhere in the frame
    "field_probability": 0.25,    # a circular dermoscope field: black outside a radius of
    "field_radius": (0.9, 1.3),   # ... this, in half-sides (1: touches the edges' midpoints; 1.41: the corners)
    "vignette_probability": 0.25,  # dark corners as a dermoscope's soft-edged field makes them: untouched
    "vignette_start": (0.4, 0.8),  # ... within this share of the half-diagonal, then darkening linearly to
    "vignette_floor": (0.0, 0.5),  # ... this share of the brightness at the corners
    "intensity": (0.7, 1.3),      # every pixel times this
    "contrast": (0.7, 1.3),       # distance from the image's mean times this
    "hue": (-0.04, 0.04),         # hue shift, in turns of the colour wheel
    "channel_gain": ROBUST_NEUTRAL["channel_gain"],  # each colour channel times its own draw, log-uniform
}


def robust_view(image, seed: int, index):
    """A view of ``image`` that keeps the lesion and changes what a shortcut reads.

    The square's symmetries (:func:`dihedral`), then a zoom out (the image
    shrunk inside black) or in, a dermoscope's black circular field or dark
    corners now and then, and intensity, contrast and hue jitter (and, when
    ``channel_gain`` is not (1, 1), a gain per colour channel) - the
    frames, vignettes and exposures that mark one class more than the other
    in the Kaggle release (notebook 01), put on images of both classes alike
    (:data:`ROBUST`). Drawn from ``(seed, index)`` only, like :func:`dihedral`,
    so a resumed run sees the same views; same size and dtype out.
    """
    import tensorflow as tf

    image = dihedral(image, seed, index)
    u = tf.random.stateless_uniform([11], seed=tf.stack([tf.cast(seed, tf.int64) + 7_919_000, tf.cast(index, tf.int64)]))
    size = tf.shape(image)[0]

    def between(low_high, draw):
        low, high = low_high
        return low + (high - low) * draw

    log_zoom = between((float(np.log(ROBUST["zoom"][0])), float(np.log(ROBUST["zoom"][1]))), u[0])
    side = tf.exp(-log_zoom)  # the box's side in image widths: above 1 reaches outside the image (black)
    low, high = tf.minimum(0.0, 1.0 - side), tf.maximum(0.0, 1.0 - side)
    top, left = between((low, high), u[1]), between((low, high), u[2])
    x = tf.image.crop_and_resize(tf.cast(image, tf.float32)[None], [[top, left, top + side, left + side]], [0],
                                 tf.stack([size, size]), extrapolation_value=0.0)[0]
    axis = (tf.cast(tf.range(size), tf.float32) + 0.5) / tf.cast(size, tf.float32) * 2.0 - 1.0
    radius = tf.sqrt(axis[:, None] ** 2 + axis[None, :] ** 2)  # 1 at the edges' midpoints
    field = tf.where((u[3] < ROBUST["field_probability"]) & (radius > between(ROBUST["field_radius"], u[4])), 0.0, 1.0)
    start, floor = between(ROBUST["vignette_start"], u[6]), between(ROBUST["vignette_floor"], u[10])
    ramp = tf.clip_by_value((radius / np.sqrt(2.0) - start) / (1.0 - start), 0.0, 1.0)
    vignette = tf.where(u[5] < ROBUST["vignette_probability"], 1.0 - (1.0 - floor) * ramp, 1.0)
    x = x * (field * vignette)[..., None] * between(ROBUST["intensity"], u[7])
    mean = tf.reduce_mean(x)
    x = (x - mean) * between(ROBUST["contrast"], u[8]) + mean
    x = tf.image.adjust_hue(tf.clip_by_value(x, 0.0, 255.0) / 255.0, between(ROBUST["hue"], u[9])) * 255.0
    gain = tuple(ROBUST["channel_gain"])
    if gain != ROBUST_NEUTRAL["channel_gain"]:  # a draw of its own: the views above stay as they were
        g = tf.random.stateless_uniform([3], seed=tf.stack([tf.cast(seed, tf.int64) + 5_003_000,
                                                            tf.cast(index, tf.int64)]))
        x = x * tf.exp(between((float(np.log(gain[0])), float(np.log(gain[1]))), g))
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), image.dtype)


#: The training-time views :func:`make_dataset` can draw (``augment``): none, the
#: square's symmetries, or those with the shortcut-breaking changes of :func:`robust_view`.
AUGMENTATIONS = {None: None, "dihedral": dihedral, "robust": robust_view}
