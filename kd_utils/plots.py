"""Figures 5-8 of the paper, training curves, confusion matrices and the
figures beyond the paper (matplotlib, no state kept)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from .evaluation import confusion_matrix, softmax
from .models import CLASS_NAMES


def save(fig, folder, name: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def image_grid(paths, labels, title: str, predictions=None, columns: int = 6, size: int = 224):
    """Figure 5 (labels) or Figure 8 (``predictions``: malignant probabilities)."""
    n = len(paths)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (path, label) in enumerate(zip(paths, labels)):
        ax = axes.ravel()[i]
        with Image.open(path) as im:
            ax.imshow(im.convert("RGB").resize((size, size)))
        text = CLASS_NAMES[int(label)]
        color = "black"
        if predictions is not None:
            p = float(predictions[i])
            guess = int(p >= 0.5)
            text = f"true {CLASS_NAMES[int(label)]}\npred {CLASS_NAMES[guess]} ({p:.2f})"
            color = "tab:green" if guess == int(label) else "tab:red"
        ax.set_title(text, fontsize=8, color=color)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def temperature_softening(logits, temperatures, title: str):
    """Figure 6: softmax(logits / T) of one image for each T."""
    probs = np.array([softmax(np.asarray(logits)[None, :], t)[0] for t in temperatures])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(temperatures))
    ax.bar(x - 0.2, probs[:, 0], 0.4, label="benign")
    ax.bar(x + 0.2, probs[:, 1], 0.4, label="malignant")
    ax.set_xticks(x, [f"T={t:g}" for t in temperatures])
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def roc_curves(records: dict, title: str):
    """Figure 7: per-class ROC with AUC for each named test record.

    A value may be a list of test records (one per seed): every seed's curve
    is drawn and the legend gives the AUC as mean ± sd.
    """
    fig, axes = plt.subplots(1, len(records), figsize=(4.6 * len(records), 4.2), squeeze=False)
    for ax, (name, tests) in zip(axes.ravel(), records.items()):
        tests = tests if isinstance(tests, list) else [tests]
        for colour, cls in zip(("tab:blue", "tab:orange"), CLASS_NAMES):
            aucs = np.array([t["auc"][cls] for t in tests])
            text = f"{aucs[0]:.3f}" if len(aucs) == 1 else f"{aucs.mean():.3f} ± {aucs.std(ddof=1):.3f}, {len(aucs)} seeds"
            for i, test in enumerate(tests):
                roc = test["roc"][cls]
                ax.plot(roc["fpr"], roc["tpr"], color=colour, alpha=1.0 if len(tests) == 1 else 0.6,
                        label=f"{cls} (AUC {text})" if i == 0 else None)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(name)
        ax.legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _counts(value) -> np.ndarray:
    """Confusion counts from a test record, a list of them (summed) or ``(labels, predicted)``."""
    if isinstance(value, tuple):
        labels, predicted = value
        return confusion_matrix(labels, predicted, len(CLASS_NAMES))
    if isinstance(value, list):
        if not value:
            raise ValueError("An empty list of test records has no confusion matrix.")
        return np.sum([_counts(v) for v in value], axis=0)
    return np.asarray(value["confusion_matrix"], dtype=np.int64)


def confusion_matrices(named: dict, title: str):
    """One confusion matrix per named model: rows the true class, columns the
    predicted class (``evaluation.confusion_matrix``, i.e. scikit-learn's).

    A value is a test record (its ``confusion_matrix``), a list of test
    records (one per seed: the counts are summed, and the title says so) or
    ``(labels, predicted)``. Each cell shows its count and its share of the
    true class (the row), which is also its colour: the diagonal holds the
    recall of each class.
    """
    fig, axes = plt.subplots(1, len(named), figsize=(3.8 * len(named), 3.6), squeeze=False)
    for ax, (name, value) in zip(axes.ravel(), named.items()):
        counts = _counts(value)
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, f"{n:d}\n{share[i, j]:.1%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black")
        ticks = np.arange(len(CLASS_NAMES))
        ax.set_xticks(ticks, CLASS_NAMES)
        ax.set_yticks(ticks, CLASS_NAMES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        seeds = f", {len(value)} seeds summed" if isinstance(value, list) and len(value) > 1 else ""
        ax.set_title(f"{name} ({int(counts.sum())} predictions{seeds})", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_curves(history: dict, title: str):
    """Accuracy and loss per epoch, training and validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("categorical_accuracy", "loss")):
        for prefix in ("", "val_"):
            if prefix + key in history:
                values = history[prefix + key]
                ax.plot(range(1, len(values) + 1), values, marker="o", label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def temperature_sweep(by_form: dict, paper: dict, title: str):
    """Table 1 per loss form: ``by_form`` maps a form's name to a
    :func:`kd_utils.reporting.sweep_table`; test mean ± sd over seeds (solid)
    and validation mean (dashed) per form, beside the paper's single runs."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, (form, table) in enumerate(by_form.items()):
        keys = sorted(table.index)
        row = table.loc[keys]
        line = ax.errorbar(keys, row["test accuracy"], yerr=np.nan_to_num(row["test sd"].to_numpy(float)),
                           fmt="o-" if i == 0 else "^-", capsize=3, label=f"{form}: test (mean ± sd)")
        ax.plot(keys, row["val accuracy"], "--", color=line[0].get_color(), label=f"{form}: validation")
    pk = sorted(paper)
    ax.plot(pk, [paper[k] for k in pk], "x:", color="grey", label="paper, test (one run)")
    ax.set_xscale("log")
    ax.set_xlabel("T (temperature)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def kd_gain(table, title: str):
    """KD gain per student (accuracy with minus without the teacher) with its interval."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.5))
    names = list(table.index)
    gain = table["KD gain"].to_numpy(float)
    low, high = table["gain 95% low"].to_numpy(float), table["gain 95% high"].to_numpy(float)
    ax.barh(names, gain, xerr=[gain - low, high - gain], capsize=4,
            color=["tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray" for lo, hi in zip(low, high)])
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel("test accuracy with teacher - without (95% paired bootstrap interval)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def reliability(curves: dict, title: str, n_bins: int = 10):
    """Reliability diagram: observed malignant fraction against the predicted
    malignant probability, per model; ``curves[name] = (labels, p_malignant)``.
    Below it, how many test predictions fall in each bin."""
    from . import stats

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="calibrated")
    edges = np.linspace(0, 1, n_bins + 1)
    for name, (labels, p) in curves.items():
        table = stats.reliability(labels, p, n_bins)
        ece = stats.expected_calibration_error(labels, p, n_bins)
        ax.plot(table["mean_predicted"], table["observed"], "o-", label=f"{name} (ECE {ece:.3f})")
        hist.hist(p, bins=edges, histtype="step", label=name)
    ax.set_ylabel("observed fraction malignant")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    hist.set_xlabel("predicted probability of malignancy")
    hist.set_ylabel("images")
    hist.set_yscale("log")
    fig.tight_layout()
    return fig
