"""Uncertainty and calibration: what a reported number is worth.

* Repeated seeds: :func:`mean_sd` (sample standard deviation, ``ddof=1``).
* The gain of distillation over the same student trained without the
  teacher: :func:`paired_bootstrap` resamples the test images (and the seeds)
  with the pairing kept - image ``i`` of seed ``s`` is scored by both models -
  and :func:`paired_t_interval` is the classical interval over seeds.
* :func:`bootstrap_interval` - a percentile interval of any statistic of one
  sample (e.g. the single teacher's accuracy over its test images).
* Calibration of the malignant probability: :func:`reliability` (observed
  frequency of malignancy per probability bin) and
  :func:`expected_calibration_error`.

The one-sample bootstrap and the t interval are SciPy's
(``scipy.stats.bootstrap``, ``scipy.stats.ttest_rel``); the bootstrap over
seeds and images together and the calibration bins have no library
equivalent and are written here, with SciPy and scikit-learn as the tests'
reference where they cover a special case.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pandas as pd
from scipy import stats as st


def mean_sd(values) -> tuple[float, float]:
    """``(mean, sample standard deviation)``; the deviation is NaN for one value."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("mean_sd needs at least one value.")
    sd = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return float(np.mean(values)), sd


def format_mean_sd(values, digits: int = 3) -> str:
    """``"0.831 ± 0.004 (n=3)"``; a single value is printed as it is."""
    mean, sd = mean_sd(values)
    n = np.asarray(values).size
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f} (n={n})"


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    _check_confidence(confidence)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


#: SciPy 1.15 renamed ``bootstrap``'s ``random_state`` to ``rng``; both take a Generator.
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(st.bootstrap).parameters else "random_state"


def bootstrap_interval(values, statistic=np.mean, n_resamples: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """``(statistic, low, high)``: percentile bootstrap over the entries of ``values``.

    ``scipy.stats.bootstrap(method="percentile")``; ``statistic`` takes an
    ``axis`` keyword, as NumPy's reductions do.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"bootstrap_interval needs a 1-D sample of at least 2 values, got shape {values.shape}.")
    _check_confidence(confidence)
    result = st.bootstrap((values,), statistic, n_resamples=n_resamples, confidence_level=confidence,
                          method="percentile", vectorized=True, **{_RNG_KEYWORD: np.random.default_rng(seed)})
    interval = result.confidence_interval
    return float(statistic(values)), float(interval.low), float(interval.high)


def paired_bootstrap(correct_a, correct_b, n_resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0, resample_seeds: bool = True) -> dict:
    """Mean of ``a - b`` with a percentile interval, pairs kept together.

    ``correct_a`` and ``correct_b`` have shape ``(n_seeds, n_images)`` (or
    ``(n_images,)`` for one seed): 1 where the model was right on that test
    image. Row ``s`` of both comes from the same seed (same initial weights
    and batch order), column ``i`` from the same image. Each resample draws
    images with replacement and, when ``resample_seeds`` and there are
    several seeds, seeds with replacement, so the interval covers both the
    test sample and the run-to-run spread.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"Paired samples must have the same shape; got {a.shape} and {b.shape}.")
    if a.shape[1] < 2:
        raise ValueError("paired_bootstrap needs at least 2 images.")
    diff = a - b
    n_seeds, n_images = diff.shape
    rng = np.random.default_rng(seed)
    samples = np.empty(n_resamples)
    for k in range(n_resamples):
        rows = rng.integers(0, n_seeds, n_seeds) if (resample_seeds and n_seeds > 1) else np.arange(n_seeds)
        cols = rng.integers(0, n_images, n_images)
        samples[k] = diff[np.ix_(rows, cols)].mean()
    low, high = _percentile_interval(samples, confidence)
    return {"difference": float(diff.mean()), "low": low, "high": high, "confidence": confidence,
            "n_seeds": int(n_seeds), "n_images": int(n_images), "n_resamples": int(n_resamples)}


def paired_t_interval(a, b, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean difference, low, high)``: Student-t interval of ``a - b`` over paired runs
    (``scipy.stats.ttest_rel``); equal differences give an interval of width 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = a - b
    if diff.ndim != 1 or diff.size < 2:
        raise ValueError(f"paired_t_interval needs at least 2 paired values, got {diff.size}.")
    _check_confidence(confidence)
    with warnings.catch_warnings():
        # SciPy warns when all differences are equal; the interval is then exactly [d, d].
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        interval = st.ttest_rel(a, b).confidence_interval(confidence_level=confidence)
    return float(diff.mean()), float(interval.low), float(interval.high)


def _check_binary(labels, p) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if labels.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {labels.size} and {p.size}.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (benign) or 1 (malignant).")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1].")
    return labels.astype(np.int64), p


def reliability(labels, p_malignant, n_bins: int = 10) -> pd.DataFrame:
    """One row per non-empty equal-width bin of the malignant probability.

    Columns: ``low``, ``high`` (the bin), ``count``, ``mean_predicted`` (mean
    probability in the bin) and ``observed`` (fraction that is malignant). A
    calibrated model has ``observed == mean_predicted``: of the lesions it
    calls 70% malignant, 70% are. Bins are ``[k/n, (k+1)/n)``, the last one
    closed.
    """
    labels, p = _check_binary(labels, p_malignant)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_y = np.bincount(index, weights=labels, minlength=n_bins)
    used = count > 0
    return pd.DataFrame({
        "low": edges[:-1][used], "high": edges[1:][used], "count": count[used],
        "mean_predicted": sum_p[used] / count[used], "observed": sum_y[used] / count[used],
    })


def expected_calibration_error(labels, p_malignant, n_bins: int = 10) -> float:
    """Count-weighted mean of ``|observed - mean_predicted|`` over the bins of :func:`reliability`."""
    table = reliability(labels, p_malignant, n_bins)
    if table.empty:
        raise ValueError("expected_calibration_error needs at least one prediction.")
    weights = table["count"] / table["count"].sum()
    return float(np.sum(weights * np.abs(table["observed"] - table["mean_predicted"])))
