"""External validation: how a trained model does on another clinic's labelled images.

A model trained on the paper's Kaggle images is run on any folder labelled
by sub-folder - ``FOLDER/{benign,malignant}/`` or, as the Kaggle dataset is
laid out, ``FOLDER/{train,test}/{benign,malignant}/`` (class folders named in
any case, images found recursively inside them) - and scored: accuracy,
ROC AUC from the malignant probability, sensitivity (recall of malignant),
specificity (recall of benign), the confusion matrix and the share of
images called malignant, each of the first four with a percentile bootstrap
interval over the images.

Images are found, read and predicted exactly as ``predict`` does
(:func:`kd_utils.tools.deploy.expand_paths`, :func:`kd_utils.tools.deploy.predict_paths`:
the training pipeline's reader, softmax of the two logits, malignant when
the probability is at least the threshold); a file that cannot be read is
reported and left out. A folder that cannot be scored (missing, no class
folders, one class only, no readable image) raises
:class:`kd_utils.data.DataError`, which the command line prints as one
``error:`` line with exit code 2.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, stats
from . import deploy
from ..sources import class_dirs

SPLITS = ("train", "test")
METRICS = ("accuracy", "auc", "sensitivity", "specificity")
_LABELS = {"accuracy": "accuracy", "auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}


def _one_class(where, counts) -> data.DataError:
    missing = data.CLASS_NAMES[int(counts[1] == 0)]
    return data.DataError(
        f"{where}: no {missing} images ({counts[0]} benign, {counts[1]} malignant): AUC, sensitivity and "
        "specificity cannot be computed with one class; is the folder mislabelled?")


def labelled_images(folder, split: str | None = None) -> tuple[list[Path], np.ndarray, dict[str, int]]:
    """``(paths, labels, sources)`` of a folder labelled by sub-folder; no image is read.

    ``sources`` maps each class folder used (relative to ``folder``, e.g.
    ``test/benign``) to its number of files. With ``train/`` and/or ``test/``,
    ``split`` picks one (None: all). DataError when nothing can be scored.
    """
    root = Path(folder)
    if not root.is_dir():
        raise data.DataError(f"{folder}: {'not a folder' if root.exists() else 'no such folder'}; expected a folder "
                             "with benign/ and malignant/ sub-folders (or train/ and test/ holding them)")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}.")
    subdirs = class_dirs(root)
    if set(subdirs) & set(data.CLASS_NAMES):
        if split:
            raise data.DataError(f"{folder}: no {split}/ folder (benign/ and malignant/ are directly in it); "
                                 "leave out the split")
        groups = [root]
    elif set(subdirs) & set(SPLITS):
        if split and split not in subdirs:
            present = ", ".join(f"{s}/" for s in SPLITS if s in subdirs)
            raise data.DataError(f"{folder}: no {split}/ folder; it has {present}")
        groups = [subdirs[s] for s in SPLITS if s in subdirs and split in (None, s)]
    else:
        found = ", ".join(f"{name}/" for name in subdirs) or "no sub-folders"
        raise data.DataError(f"{folder}: no benign/ or malignant/ folder (found {found}); expected "
                             "FOLDER/{benign,malignant}/ or FOLDER/{train,test}/{benign,malignant}/")
    paths, labels, sources = [], [], {}
    for group in groups:
        classes = class_dirs(group)
        if not set(classes) & set(data.CLASS_NAMES):
            raise data.DataError(f"{group}: no benign/ or malignant/ folder inside")
        for label, name in enumerate(data.CLASS_NAMES):
            if name in classes:
                files = [p for p in deploy.expand_paths(classes[name]) if p.is_file()]
                sources[classes[name].relative_to(root).as_posix()] = len(files)
                paths += files
                labels += [label] * len(files)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if not counts.sum():
        raise data.DataError(f"{folder}: no {'/'.join(deploy.PREDICT_SUFFIXES)} files in "
                             f"{', '.join(sources) or 'the class folders'}")
    if counts.min() == 0:
        raise _one_class(folder, counts)
    return paths, labels, sources


def _interval(samples, value: float, confidence: float) -> dict:
    samples = samples[np.isfinite(samples)]
    low, high = stats._percentile_interval(samples, confidence) if samples.size else (None, None)
    return {"value": value, "low": low, "high": high}


def binary_metrics(labels, p_malignant, threshold: float = 0.5, *, n_resamples: int = 2000,
                   confidence: float = 0.95, seed: int = 0) -> dict:
    """Accuracy, AUC, sensitivity, specificity (each ``{"value", "low", "high"}``), the
    confusion matrix (rows true, columns predicted, benign first) and the malignant-call rate.

    An image is called malignant when ``p_malignant >= threshold`` (as
    ``predict``). Intervals: percentile bootstrap, ``n_resamples`` resamples
    of the images drawn with replacement (seeded); AUC, sensitivity and
    specificity use the resamples that hold both classes (counted in
    ``bootstrap.two_class_resamples``). DataError when one class is absent.
    """
    from .. import evaluation  # imports Keras

    labels, p = stats._check_binary(labels, p_malignant)
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        raise _one_class("labels", counts)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}.")
    called = (p >= threshold).astype(np.int64)
    matrix = evaluation.confusion_matrix(labels, called)
    fpr, tpr, _ = evaluation.roc_curve(labels, p)
    point = {"accuracy": float(np.mean(called == labels)), "auc": evaluation.auc(fpr, tpr),
             "sensitivity": float(matrix[1, 1] / counts[1]), "specificity": float(matrix[0, 0] / counts[0])}
    samples = _bootstrap(labels, p, called == labels, n_resamples, seed)
    return {
        "n": int(labels.size), "n_benign": int(counts[0]), "n_malignant": int(counts[1]), "threshold": float(threshold),
        **{name: _interval(samples[name], point[name], confidence) for name in METRICS},
        "confusion_matrix": matrix.tolist(), "malignant_call_rate": float(called.mean()),
        "bootstrap": {"method": "percentile", "n_resamples": int(n_resamples), "confidence": float(confidence),
                      "seed": int(seed), "two_class_resamples": int(np.isfinite(samples["auc"]).sum())},
    }


def _bootstrap(labels, p, correct, n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """The metrics of ``n_resamples`` resamples (NaN where a resample lacks a class), vectorised.

    A resample is a row of counts (how often each image was drawn). AUC is
    the Mann-Whitney statistic with ties as one half, from per-score-value
    sums of the counts: images sorted by score, tied scores one group.
    """
    n = labels.size
    order = np.argsort(p, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(p[order]) != 0])  # first image of each distinct score
    positive, negative = (labels[order] == 1), (labels[order] == 0)
    hit = correct[order].astype(np.float64)
    rng = np.random.default_rng(seed)
    out = {name: np.empty(n_resamples) for name in METRICS}
    chunk = max(1, 4_000_000 // n)  # bounded memory: about 32 MB of counts at a time
    for first in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - first)
        draws = rng.integers(0, n, (rows, n)) + n * np.arange(rows)[:, None]
        counts = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)[:, order].astype(np.float64)
        pos, neg = counts * positive, counts * negative
        pos_g, neg_g = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)
        n_pos, n_neg = pos_g.sum(axis=1), neg_g.sum(axis=1)
        below = np.cumsum(neg_g, axis=1) - neg_g  # negatives with a lower score than the group
        wins = np.sum(pos_g * (below + 0.5 * neg_g), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            both = (n_pos > 0) & (n_neg > 0)
            part = slice(first, first + rows)
            out["accuracy"][part] = counts @ hit / n
            out["auc"][part] = np.where(both, wins / (n_pos * n_neg), np.nan)
            out["sensitivity"][part] = np.where(both, (pos @ hit) / n_pos, np.nan)
            out["specificity"][part] = np.where(both, (neg @ hit) / n_neg, np.nan)
    return out


@dataclasses.dataclass
class FolderEvaluation:
    """A model scored on a labelled folder: what was used, the metrics, what was skipped."""

    model: str
    image_size: int
    folder: str
    split: str | None
    sources: dict[str, int]  # class folder (relative to ``folder``) -> image files found
    metrics: dict  # binary_metrics()
    skipped: list[tuple[str, str]]  # (path, why) of the files that could not be read
    images: list[dict]  # per readable image: path, label, malignant_probability, prediction

    def to_dict(self) -> dict:
        """Everything as one JSON-ready document (the metrics at the top level)."""
        return {"disclaimer": deploy.DISCLAIMER, "model": self.model, "image_size": self.image_size,
                "folder": self.folder, "split": self.split, "sources": self.sources, **self.metrics,
                "skipped": [{"path": path, "error": why} for path, why in self.skipped], "images": self.images}

    def summary(self) -> str:
        """A text table for a person: metric, value, interval; the confusion matrix."""
        m, boot = self.metrics, self.metrics["bootstrap"]
        used = ", ".join(f"{name} ({count})" for name, count in self.sources.items())
        lines = [f"External validation of {self.model} ({self.image_size} px) on {self.folder}"
                 + (f", split {self.split}" if self.split else ""),
                 f"images used: {used}" + (f"; {len(self.skipped)} unreadable file(s) skipped" if self.skipped else ""),
                 f"n = {m['n']} (benign {m['n_benign']}, malignant {m['n_malignant']}); malignant when "
                 f"p >= {m['threshold']:g}", "",
                 f"{'metric':<20}{'value':>7}   {boot['confidence']:.0%} interval"]
        for name in METRICS:
            row = m[name]
            span = "-" if row["low"] is None else f"[{row['low']:.3f}, {row['high']:.3f}]"
            lines.append(f"{_LABELS[name]:<20}{row['value']:>7.3f}   {span}")
        lines += [f"{'malignant-call rate':<20}{m['malignant_call_rate']:>7.3f}",
                  f"Percentile bootstrap over images: {boot['n_resamples']} resamples (seed {boot['seed']}); "
                  f"{boot['two_class_resamples']} held both classes (AUC, sensitivity, specificity).", "",
                  "Confusion matrix (rows true, columns predicted):", f"{'':<12}{'benign':>10}{'malignant':>11}"]
        lines += [f"{name:<12}{row[0]:>10}{row[1]:>11}" for name, row in zip(data.CLASS_NAMES, m["confusion_matrix"])]
        return "\n".join(lines)


def evaluate_folder(model, folder, *, split: str | None = None, threshold: float = 0.5, n_resamples: int = 2000,
                    confidence: float = 0.95, seed: int = 0, batch_size: int = 32) -> FolderEvaluation:
    """Score ``model`` (a ``.keras`` / ``.tflite`` path, a runner from
    :func:`kd_utils.tools.deploy.load_model` or a keras.Model) on a labelled folder.

    See :func:`labelled_images` for the layouts and ``split``, and
    :func:`binary_metrics` for the metrics. Unreadable files are listed in
    ``skipped``; DataError when no readable image (or only one class) is left.
    """
    paths, labels, sources = labelled_images(folder, split)
    runner = deploy._runner(model)
    results = deploy.predict_paths(paths, runner, batch_size=batch_size, threshold=threshold)
    read = [(r, int(y)) for r, y in zip(results, labels) if r.ok]
    skipped = [(r.path, r.error) for r in results if not r.ok]
    if not read:
        raise data.DataError(f"{folder}: none of the {len(paths)} image file(s) could be read "
                             f"(e.g. {skipped[0][0]}: {skipped[0][1]})")
    kept = np.array([y for _, y in read])
    if np.bincount(kept, minlength=2).min() == 0:
        raise _one_class(f"{folder} (readable images)", np.bincount(kept, minlength=2))
    metrics = binary_metrics(kept, [r.malignant_probability for r, _ in read], threshold,
                             n_resamples=n_resamples, confidence=confidence, seed=seed)
    images = [{"path": r.path, "label": data.CLASS_NAMES[y], "malignant_probability": r.malignant_probability,
               "prediction": r.label} for r, y in read]
    name = getattr(runner, "path", None) or getattr(model, "name", "model")
    return FolderEvaluation(str(name), int(runner.image_size), str(folder), split, sources, metrics, skipped, images)


def compare(groups: dict, folder, load, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Several models, each over its seeds, on one external folder.

    ``groups`` maps a name (``"DSNet distilled"``) to a list of run records
    (one per seed; a record needs ``test.accuracy``, the in-distribution test
    split's); ``load(record)`` gives the model to score. Returns ``(by_model,
    by_run)``: per name the mean over its runs of the in-distribution test
    accuracy beside the folder's accuracy, AUC, sensitivity, specificity and
    malignant-call rate (and the runs' sd of the folder's accuracy); per run
    the same with each metric's bootstrap interval over images. ``options``
    go to :func:`evaluate_folder`."""
    rows = []
    for name, records in groups.items():
        for record in records:
            m = evaluate_folder(load(record), folder, **options).metrics
            row = {"model": name, "seed": record.get("config", {}).get("seed"),
                   "test accuracy (in-distribution)": float(record["test"]["accuracy"])}
            for metric in METRICS:
                row[metric] = m[metric]["value"]
                row[f"{metric} low"], row[f"{metric} high"] = m[metric]["low"], m[metric]["high"]
            row["malignant calls"] = m["malignant_call_rate"]
            rows.append(row)
    by_run = pd.DataFrame(rows)
    shown = ["test accuracy (in-distribution)", *METRICS, "malignant calls"]
    grouped = by_run.groupby("model", sort=False)
    by_model = grouped[shown].mean()
    by_model.insert(0, "runs", grouped.size())
    by_model["accuracy sd"] = grouped["accuracy"].std()
    by_model["gap (accuracy)"] = by_model["accuracy"] - by_model["test accuracy (in-distribution)"]
    return by_model, by_run
