"""Predictions with timing and the paper's metrics, from probabilities.

Malignant (class 1) is the positive class. A record holds exactly what the
tables print: accuracy, per-class precision / recall / F1, the confusion
matrix, ROC curves and AUC from the predicted probabilities (not from argmax
labels), the wall time to predict the whole test set and the parameter
count. The metrics themselves come from scikit-learn; the functions here fix
the conventions (two classes always present in the matrix, undefined
precision reported as 0, every threshold kept on the ROC curve) and refuse
input that would silently give a wrong table.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from sklearn import metrics as skm

from .distillation import split_inputs
from .models import CLASS_NAMES, count_params


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confusion_matrix(y_true, y_pred, num_classes: int = 2) -> np.ndarray:
    """Rows: true class, columns: predicted class (every class, even if absent)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}.")
    if not y_true.size:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    if min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes:
        raise ValueError(f"Labels must lie in 0..{num_classes - 1}.")
    return skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def per_class_report(y_true, y_pred, class_names=CLASS_NAMES) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    confusion_matrix(y_true, y_pred, len(class_names))  # the same checks on the labels
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64),
        labels=np.arange(len(class_names)), zero_division=0,
    )
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False/true positive rates at every distinct score threshold.

    ``y_true`` is 1 for positives. Thresholds run from +inf down, so the curve
    starts at (0, 0) and ends at (1, 1); tied scores form one point; no point
    is dropped (``drop_intermediate=False``), so every seed's curve is drawn
    from the same kind of points.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape or y_true.ndim != 1:
        raise ValueError("roc_curve expects two 1-D arrays of the same length.")
    if y_true.all() or not y_true.any():
        raise ValueError("ROC needs both classes in y_true; found only one.")
    return skm.roc_curve(y_true.astype(np.int64), scores, pos_label=1, drop_intermediate=False)


def auc(fpr, tpr) -> float:
    """Area under a curve by the trapezoidal rule."""
    return float(skm.auc(np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)))


@dataclasses.dataclass
class Predictions:
    """What a model said about one split."""

    labels: np.ndarray  # (n,) int, 0 benign / 1 malignant
    logits: np.ndarray  # (n, 2)
    seconds: float  # wall time of the whole prediction pass

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)

    @property
    def predicted(self) -> np.ndarray:
        return np.argmax(self.logits, axis=-1)


def predict(model, dataset) -> Predictions:
    """Run ``model`` over a batched dataset of ``(inputs, one_hot)``; time it.

    The clock covers the whole pass over the dataset (reading, decoding,
    the model), as the paper's "prediction time for 3000 test images". One
    batch is predicted before the clock starts, so that building the
    compiled predict function is not counted: one full batch and one of a
    single image, so that the traced function also fits the last, smaller
    batch. A model that runs eagerly (``run_eagerly``) traces nothing and
    skips them.
    """
    for x, _ in ([] if getattr(model, "run_eagerly", False) else dataset.take(1)):
        images = split_inputs(x)[0]
        model.predict_on_batch(images)
        model.predict_on_batch(images[:1])
    logits, labels = [], []
    start = time.perf_counter()
    for x, y in dataset:
        images, _ = split_inputs(x)  # precomputed teacher logits are not needed here
        logits.append(np.asarray(model.predict_on_batch(images)))
        labels.append(np.asarray(y))
    seconds = time.perf_counter() - start
    if not logits:
        raise ValueError("The dataset is empty: nothing to predict.")
    y = np.concatenate(labels)
    labels_int = np.argmax(y, axis=-1) if y.ndim == 2 else y.astype(np.int64)
    return Predictions(labels=labels_int, logits=np.concatenate(logits).astype(np.float64), seconds=seconds)


def metrics_from_predictions(pred: Predictions) -> dict:
    """Accuracy, per-class P/R/F1, confusion matrix, ROC and AUC per class."""
    probs = pred.probabilities
    y_pred = pred.predicted
    record = {
        "n": int(pred.labels.size),
        "accuracy": float(np.mean(y_pred == pred.labels)),
        "per_class": per_class_report(pred.labels, y_pred),
        "confusion_matrix": confusion_matrix(pred.labels, y_pred).tolist(),
        "prediction_seconds": float(pred.seconds),
        "roc": {},
        "auc": {},
    }
    if len(np.unique(pred.labels)) == 2:
        for k, name in enumerate(CLASS_NAMES):
            fpr, tpr, _ = roc_curve(pred.labels == k, probs[:, k])
            record["roc"][name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
            record["auc"][name] = auc(fpr, tpr)
    return record


def evaluate(model, dataset) -> dict:
    """Predict ``dataset`` with ``model`` and return the full metrics record."""
    record = metrics_from_predictions(predict(model, dataset))
    record["params"] = count_params(model)
    return record


def fidelity(student_logits, teacher_logits) -> dict:
    """How closely a student follows its teacher on the same images:
    ``agreement`` (share of equal top-1 predictions) and ``kl`` =
    mean KL(softmax(teacher) || softmax(student)) at T = 1, in nats."""
    s = np.asarray(student_logits, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"student and teacher logits must have the same (n, classes) shape; got {s.shape} and {t.shape}.")
    log_p = t - np.logaddexp.reduce(t, axis=1, keepdims=True)
    log_q = s - np.logaddexp.reduce(s, axis=1, keepdims=True)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
    return {"agreement": float(np.mean(s.argmax(1) == t.argmax(1))), "kl": float(np.mean(kl))}
