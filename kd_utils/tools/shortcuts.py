"""Does a model read the lesion, or the frame around it?

Dermoscopy archives differ in how images are taken: the black circle of the
dermoscope's field, dark corners, exposure, colour. When one class was taken
more often one way (in the Kaggle set, dark corners are far more common among
the malignant images), a model can learn the way rather than the lesion, and
then fails on another clinic's images. This module scores a model on
lesion-preserving transforms of the same images - a fixed battery
(:data:`BATTERY`) that changes the frame, the exposure or the colour and
leaves the lesion as it is - and reports, per transform, the accuracy, the
share of images called malignant, and the share of calls that **flip**
against the untransformed image.

What it is evidence of: a high flip rate under a transform means the model's
decision depends on what that transform changes. What it is not: a low flip
rate does not show that a model reads the lesion (it may use other cues the
battery leaves alone), and the transforms are applied at the model's input
size, so a frame or a vignette is as coarse as the model's pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _shrunk(image: np.ndarray, scale: float) -> tuple[np.ndarray, int, int]:
    """The image scaled by ``scale`` and where its top-left corner goes to stay centred."""
    h, w = image.shape[:2]
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    return _resize(image, sw, sh), (h - sh) // 2, (w - sw) // 2


def black_frame(image: np.ndarray, scale: float) -> np.ndarray:
    """The image shrunk to ``scale`` of its size, centred on black: a frame."""
    small, top, left = _shrunk(image, scale)
    out = np.zeros_like(image)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out


def zoom_out(image: np.ndarray, scale: float = 0.8) -> np.ndarray:
    """The image shrunk to ``scale`` and its border filled by mirroring it: a
    wider view without a frame."""
    small, top, left = _shrunk(image, scale)
    h, w = image.shape[:2]
    pads = ((top, h - small.shape[0] - top), (left, w - small.shape[1] - left), (0, 0))
    return np.pad(small, pads, mode="symmetric")


def zoom_in(image: np.ndarray, scale: float = 0.8) -> np.ndarray:
    """The central ``scale`` of the image, enlarged back to its size."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(np.ascontiguousarray(image[top : top + ch, left : left + cw]), w, h)


def dark_corners(image: np.ndarray, start: float = 0.7, floor: float = 0.1) -> np.ndarray:
    """A radial vignette: untouched within ``start`` of the half-diagonal from
    the centre, darkening linearly to ``floor`` of the brightness at the corners."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot((y - (h - 1) / 2) / (h / 2), (x - (w - 1) / 2) / (w / 2)) / np.sqrt(2)
    factor = np.clip(1 - (r - start) / (1 - start) * (1 - floor), floor, 1.0)
    return np.clip(image * factor[..., None], 0, 255).astype(np.uint8)


def intensity(image: np.ndarray, factor: float) -> np.ndarray:
    """Every pixel times ``factor`` (clipped to 0-255)."""
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Distances from the image's mean brightness times ``factor`` (clipped)."""
    mean = image.astype(np.float32).mean()
    return np.clip((image.astype(np.float32) - mean) * factor + mean, 0, 255).astype(np.uint8)


#: A warm cast (red up, blue down), as a yellowish light or white balance gives.
WARM_CAST = (1.12, 1.0, 0.85)


def colour_cast(image: np.ndarray, gains=WARM_CAST) -> np.ndarray:
    """Each channel times its gain (clipped)."""
    return np.clip(image.astype(np.float32) * np.asarray(gains, np.float32), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Transform:
    name: str
    what: str
    apply: Callable[[np.ndarray], np.ndarray]


#: The battery, fixed: every report runs all of it, in this order.
BATTERY = (
    Transform("frame 90%", "shrunk to 90% inside a black frame", lambda im: black_frame(im, 0.9)),
    Transform("frame 75%", "shrunk to 75% inside a black frame", lambda im: black_frame(im, 0.75)),
    Transform("dark corners", "radial vignette, centre untouched, corners at 10%", dark_corners),
    Transform("zoom in", "central 80% enlarged", zoom_in),
    Transform("zoom out", "shrunk to 80%, border mirrored (no frame)", zoom_out),
    Transform("intensity -20%", "every pixel x 0.8", lambda im: intensity(im, 0.8)),
    Transform("intensity +20%", "every pixel x 1.2", lambda im: intensity(im, 1.2)),
    Transform("contrast -20%", "distance from the mean x 0.8", lambda im: contrast(im, 0.8)),
    Transform("contrast +20%", "distance from the mean x 1.2", lambda im: contrast(im, 1.2)),
    Transform("colour cast", "warm: red x 1.12, blue x 0.85", colour_cast),
)


#: The floor: two transforms that change nothing a reader of the lesion uses.
#: A model trained on them (:func:`kd_utils.batches.dihedral`, the robust
#: views) still flips a few per cent of its calls - those near its
#: threshold - so a battery row near these is as steady as the model gets;
#: one not trained on them may flip many more. Reported after the battery,
#: not part of it.
FLOOR = (
    Transform("mirror", "floor: left-right mirror", lambda im: np.ascontiguousarray(im[:, ::-1])),
    Transform("quarter turn", "floor: turned 90 degrees", lambda im: np.ascontiguousarray(np.rot90(im))),
)


def report(runner, images: np.ndarray, labels, threshold: float = 0.5, batch_size: int = 64) -> pd.DataFrame:
    """The battery on ``images`` (uint8, the model's input size) with their
    ``labels`` (0 benign, 1 malignant), one row per transform after the
    untransformed ``none``, then the :data:`FLOOR` rows: accuracy, the share
    called malignant, the share of calls that flip against ``none``, and
    those flips' direction.
    ``runner`` predicts logits (:func:`kd_utils.tools.deploy.load_model`)."""
    from .. import evaluation

    labels = np.asarray(labels)

    def calls(batch):
        p = evaluation.softmax(runner.predict_logits(batch, batch_size=batch_size))[:, 1]
        return (p >= threshold).astype(int)

    plain = calls(images)
    rows = {"none": (plain, "the images as they are")}
    for t in (*BATTERY, *FLOOR):
        rows[t.name] = (calls(np.stack([t.apply(im) for im in images])), t.what)
    return pd.DataFrame({
        "transform": list(rows),
        "accuracy": [float(np.mean(c == labels)) for c, _ in rows.values()],
        "called malignant": [float(np.mean(c)) for c, _ in rows.values()],
        "flipped": [float(np.mean(c != plain)) for c, _ in rows.values()],
        "to malignant": [float(np.mean((c == 1) & (plain == 0))) for c, _ in rows.values()],
        "to benign": [float(np.mean((c == 0) & (plain == 1))) for c, _ in rows.values()],
        "what": [w for _, w in rows.values()],
    }).set_index("transform")


def report_folder(model, folder, *, split: str | None = None, limit: int | None = None, seed: int = 0,
                  threshold: float = 0.5) -> tuple[pd.DataFrame, dict]:
    """:func:`report` on a labelled folder (the layouts of
    :func:`kd_utils.tools.external.labelled_images`), at most ``limit`` images drawn
    at random (``seed``) with both classes kept; unreadable files skipped.
    Returns the table and ``{"model", "folder", "images", "skipped"}``."""
    from . import deploy, external

    paths, labels, _ = external.labelled_images(folder, split)
    if limit is not None and limit < len(paths):
        pick = np.sort(np.random.default_rng(seed).choice(len(paths), size=limit, replace=False))
        paths, labels = [paths[i] for i in pick], labels[pick]
    runner = deploy._runner(model)
    images, kept, skipped = [], [], []
    for path, label in zip(paths, labels):
        try:
            images.append(deploy.read_image(path, runner.image_size))
            kept.append(int(label))
        except deploy.ImageReadError as err:
            skipped.append((str(path), str(err)))
    if not images:
        from ..data import DataError

        raise DataError(f"{folder}: none of the {len(paths)} image file(s) could be read.")
    table = report(runner, np.stack(images), kept, threshold)
    info = {"model": str(getattr(runner, "path", None) or getattr(model, "name", "model")), "folder": str(folder),
            "split": split, "images": len(kept), "image_size": int(runner.image_size), "skipped": skipped}
    return table, info


def report_split(model, manifest, split: str = "val", threshold: float = 0.5) -> pd.DataFrame:
    """:func:`report` on one split of a manifest (the validation split by
    default: choices are made there, never on test), each image read as
    ``predict`` reads it, at the model's own input size."""
    from . import deploy

    runner = deploy._runner(model)
    rows = manifest.split(split)
    images = np.stack([deploy.read_image(p, runner.image_size) for p in rows.path])
    return report(runner, images, rows.label.to_numpy(), threshold)


# --------------------------------------------------------------------------- what a dataset's images carry

#: A corner is dark when its mean grey level (0-255) is below this.
DARK_CORNER = 60
#: A frame is black when the mean grey level of the image's outer ring is below this.
BLACK_FRAME = 30


def image_artefacts(path, size: int = 64) -> dict:
    """Grey-level facts of one image, read at ``size`` px: the mean of its
    four corner squares (a tenth of the side each), of its outer ring (a
    twentieth of the side) and of the whole image."""
    with Image.open(path) as im:
        im.draft("L", (size, size))  # JPEG: decode small
        grey = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float32)
    c, r = max(1, size // 10), max(1, size // 20)
    corners = np.concatenate([grey[:c, :c].ravel(), grey[:c, -c:].ravel(), grey[-c:, :c].ravel(),
                              grey[-c:, -c:].ravel()])
    ring = np.concatenate([grey[:r].ravel(), grey[-r:].ravel(), grey[r:-r, :r].ravel(), grey[r:-r, -r:].ravel()])
    return {"corner_mean": float(corners.mean()), "ring_mean": float(ring.mean()), "brightness": float(grey.mean())}


#: The Shades of Gray norm of :func:`light_colour`, as :class:`kd_utils.models.ShadesOfGray` uses it.
LIGHT_NORM = 6.0

#: :func:`light_colour` reads the light where the skin usually is: farther from
#: the centre than this share of the half-diagonal (the battery's dark corners
#: start at 0.7).
LIGHT_OUTSIDE = 0.6


def _log_light(x: np.ndarray, axis) -> np.ndarray:
    """The Shades of Gray estimate of the light in ``x`` (float, 0-1, channels
    last): the :data:`LIGHT_NORM`-norm mean over ``axis``, as ``[..., (log
    red/green, log blue/green)]``."""
    light = np.mean(x**LIGHT_NORM, axis=axis) ** (1.0 / LIGHT_NORM) + 1e-6
    return np.log(light[..., [0, 2]] / light[..., [1]])


def light_colour(path, size: int = 64) -> dict:
    """The colour of the light one image was taken under, read at ``size`` px
    from the skin around the lesion: the Shades of Gray estimate (the
    :data:`LIGHT_NORM`-norm mean of each channel, what
    :class:`kd_utils.models.ShadesOfGray` divides out) over the pixels
    farther from the centre than :data:`LIGHT_OUTSIDE` of the half-diagonal
    that are not black (grey level at least :data:`BLACK_FRAME`, so a frame
    does not count), as ``log(red / green)`` and ``log(blue / green)``. A cast
    of the camera or the lamp adds the log of its gains: the battery's warm
    cast (:data:`WARM_CAST`) adds +0.113 and -0.163. A lesion that reaches
    the corners colours the estimate too."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        rgb = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), np.float64) / 255.0
    axis = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    outside = np.hypot(axis[:, None], axis[None, :]) / np.sqrt(2.0) > LIGHT_OUTSIDE
    lit = outside & (rgb.mean(-1) >= BLACK_FRAME / 255.0)
    pixels = rgb[lit] if lit.any() else rgb.reshape(-1, 3)  # all black there: the whole image
    red_green, blue_green = _log_light(pixels, axis=0)
    return {"light red/green": float(red_green), "light blue/green": float(blue_green)}


def light_shift(images: np.ndarray, transforms=BATTERY) -> pd.DataFrame:
    """How far each transform moves the light that
    :class:`kd_utils.models.ShadesOfGray` divides out of ``images`` (uint8,
    ``(n, h, w, 3)``): its whole-image :data:`LIGHT_NORM`-norm estimate as log
    red/green and log blue/green, the mean over images of the absolute change.
    A colour cast moves it by the log of its gains (and the layer takes the
    cast out); a transform that moves it little leaves the layer's output
    recoloured by that little - a flip under it comes from the model, not
    from the layer."""

    def light(batch):
        return _log_light(batch.astype(np.float64) / 255.0, axis=(1, 2))

    before = light(images)
    rows = {}
    for t in transforms:
        moved = np.abs(light(np.stack([t.apply(im) for im in images])) - before).mean(axis=0)
        rows[t.name] = {"red/green": float(moved[0]), "blue/green": float(moved[1])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("transform")


def image_marks(frame: pd.DataFrame, size: int = 64) -> pd.DataFrame:
    """Per image of ``frame`` (``path`` needed; its index kept): ``dark corners``
    (corner mean < :data:`DARK_CORNER`), ``black frame`` (ring mean <
    :data:`BLACK_FRAME`) and ``brightness``, from :func:`image_artefacts`."""
    values = pd.DataFrame([image_artefacts(p, size) for p in frame.path], index=frame.index,
                          columns=["corner_mean", "ring_mean", "brightness"])
    return pd.DataFrame({"dark corners": values.corner_mean < DARK_CORNER,
                         "black frame": values.ring_mean < BLACK_FRAME, "brightness": values.brightness})


def artefacts(frame: pd.DataFrame, size: int = 64) -> pd.DataFrame:
    """Per class (and split, when ``frame`` has one): the share of images
    with dark corners and with a black frame, the mean brightness
    (:func:`image_marks`) and the mean colour of the light
    (:func:`light_colour`). ``frame`` needs ``path`` and ``label`` (a
    manifest's frame)."""
    from ..data import CLASS_NAMES, SPLITS

    light = pd.DataFrame([light_colour(p, size) for p in frame.path], index=frame.index)
    table = frame[[c for c in ("split", "label") if c in frame]].join(image_marks(frame, size)).join(light)
    table["class"] = pd.Categorical([CLASS_NAMES[int(y)] for y in table.label], categories=CLASS_NAMES)
    if "split" in table:  # rows in the splits' own order (train, val, test), not alphabetical
        table["split"] = pd.Categorical(table.split, categories=[s for s in SPLITS if s in set(table.split)])
    keys = [k for k in ("split", "class") if k in table]
    groups = table.groupby(keys, observed=True)
    out = groups[["dark corners", "black frame", "brightness", *light.columns]].mean()
    out.insert(0, "images", groups.size())
    return out


#: What :func:`cue_strength` lets tell the classes apart, each alone and then together:
#: the columns of :func:`image_artefacts` and :func:`light_colour` it reads.
CUES = {
    "dark corners (corner grey level)": ["corner_mean"],
    "black frame (outer ring grey level)": ["ring_mean"],
    "brightness (mean grey level)": ["brightness"],
    "colour of the light (red/green, blue/green)": ["light red/green", "light blue/green"],
    "all of these": ["corner_mean", "ring_mean", "brightness", "light red/green", "light blue/green"],
}


def cue_strength(frame: pd.DataFrame, size: int = 64, fit: str = "train", score: str = "val") -> pd.DataFrame:
    """How well each thing that is not the lesion tells the classes apart on its
    own (:data:`CUES`): a logistic regression on that cue's numbers alone,
    fitted on the ``fit`` split of ``frame`` (a manifest's frame: ``path``,
    ``label``, ``split``) and scored on the ``score`` split - its AUC and its
    accuracy. An AUC near 0.5 offers a model nothing; well above it, a model
    can be right that often without looking at a lesion. What it is not: a
    cue a model could use is not one it did use (that is what the battery
    measures)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parts = {}
    for split in (fit, score):
        rows = frame[frame.split == split]
        if rows.label.nunique() < 2:
            raise ValueError(f"the {split!r} split needs images of both classes, it has {len(rows)} "
                             f"of {sorted(set(rows.label))}.")
        values = pd.DataFrame([{**image_artefacts(p, size), **light_colour(p, size)} for p in rows.path])
        parts[split] = (values, rows.label.to_numpy(dtype=int))
    (x_fit, y_fit), (x_score, y_score) = parts[fit], parts[score]
    out = {}
    for cue, columns in CUES.items():
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x_fit[columns], y_fit)
        p = model.predict_proba(x_score[columns])[:, 1]
        out[cue] = {f"{score} AUC": float(roc_auc_score(y_score, p)), f"{score} accuracy": float(np.mean((p >= 0.5) == y_score))}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis(f"cue (fitted on {fit})")


def marked(frame: pd.DataFrame, size: int = 64) -> np.ndarray:
    """Per image of ``frame`` (a manifest's rows, ``path`` needed): True when it
    carries dark corners or a black frame (:func:`image_marks`)."""
    marks = image_marks(frame, size)
    return (marks["dark corners"] | marks["black frame"]).to_numpy(dtype=bool)


def accuracy_by_artefact(labels, marks, correct: dict) -> pd.DataFrame:
    """Accuracy per class on the images that carry dark corners or a black
    frame (``marks`` True, :func:`marked`) and on those that do not.
    ``correct``: ``{model: (n_runs, n_images) 0/1}`` in the images' order
    (:func:`kd_utils.reporting.correct_matrix` given the same ``labels``,
    which refuses runs scored in another order); each cell is the mean over
    runs and images. Within one class accuracy is that class's recall: a
    model that reads the frame is right on the malignant images that carry
    it, wrong on the malignant ones that do not and on the benign ones that
    do - the in-distribution accuracy a shortcut buys, shown where it is
    bought."""
    from ..data import CLASS_NAMES

    labels, marks = np.asarray(labels).astype(int), np.asarray(marks, dtype=bool)
    if labels.shape != marks.shape:
        raise ValueError(f"{len(labels)} labels but {len(marks)} artefact marks: they must describe the same images.")
    rows = {}
    for y, name in enumerate(CLASS_NAMES):
        for subset, keep in (("dark corners or frame", marks), ("neither", ~marks)):
            rows[(name, subset)] = (labels == y) & keep
    rows[("both classes", "all")] = np.ones_like(marks)
    table = pd.DataFrame({"images": [int(r.sum()) for r in rows.values()]},
                         index=pd.MultiIndex.from_tuples(list(rows), names=["class", "images carrying"]))
    for model, matrix in correct.items():
        matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
        if matrix.shape[1] != len(labels):
            raise ValueError(f"{model}: {matrix.shape[1]} predictions for {len(labels)} images.")
        table[model] = [float(matrix[:, r].mean()) if r.any() else float("nan") for r in rows.values()]
    return table
