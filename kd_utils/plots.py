"""Figures 5-8 of the paper and training curves (matplotlib, no state kept)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from .evaluation import softmax
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
    """Figure 7: per-class ROC with AUC for each named record's test metrics."""
    fig, axes = plt.subplots(1, len(records), figsize=(4.6 * len(records), 4.2), squeeze=False)
    for ax, (name, test) in zip(axes.ravel(), records.items()):
        for cls in CLASS_NAMES:
            roc = test["roc"][cls]
            ax.plot(roc["fpr"], roc["tpr"], label=f"{cls} (AUC {test['auc'][cls]:.3f})")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(name)
        ax.legend(loc="lower right")
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


def sweep(values: dict, paper: dict, xlabel: str, title: str):
    """A Table 1 / Table 6 sweep: ours (test and validation) beside the paper's."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    keys = sorted(values)
    ax.plot(keys, [values[k]["test"] for k in keys], "o-", label="ours, test")
    ax.plot(keys, [values[k]["val"] for k in keys], "s--", label="ours, validation")
    pk = sorted(paper)
    ax.plot(pk, [paper[k] for k in pk], "x:", label="paper, test")
    ax.set_xscale("log" if xlabel.startswith("T") else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.legend()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
