import numpy as np
import pytest
from scipy import stats as st
from sklearn.calibration import calibration_curve

from kd_utils import stats


def test_mean_sd_is_the_sample_standard_deviation():
    mean, sd = stats.mean_sd([0.80, 0.83, 0.86])
    assert mean == pytest.approx(0.83)
    assert sd == pytest.approx(0.03)  # sqrt(((-.03)^2 + 0 + .03^2) / 2)
    assert np.isnan(stats.mean_sd([0.5])[1])
    assert stats.format_mean_sd([0.80, 0.83, 0.86]) == "0.830 ± 0.030 (n=3)"
    assert stats.format_mean_sd([0.5]) == "0.500"
    with pytest.raises(ValueError, match="at least one"):
        stats.mean_sd([])


def test_paired_t_interval_equals_scipy():
    a = np.array([0.84, 0.81, 0.86, 0.83])
    b = np.array([0.82, 0.80, 0.83, 0.84])
    mean, low, high = stats.paired_t_interval(a, b, confidence=0.95)
    reference = st.ttest_rel(a, b).confidence_interval(confidence_level=0.95)
    assert mean == pytest.approx(np.mean(a - b))
    assert (low, high) == pytest.approx((reference.low, reference.high), abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_t_interval([1.0], [0.0])


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    correct = (rng.random(400) < 0.8).astype(float)
    value, low, high = stats.bootstrap_interval(correct, n_resamples=20000, seed=1)
    reference = st.bootstrap((correct,), np.mean, n_resamples=20000, method="percentile",
                             random_state=np.random.default_rng(2)).confidence_interval
    assert value == pytest.approx(correct.mean())
    assert low == pytest.approx(reference.low, abs=0.006)
    assert high == pytest.approx(reference.high, abs=0.006)
    # and with the normal approximation of a proportion
    se = np.sqrt(correct.mean() * (1 - correct.mean()) / correct.size)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.08)


def test_paired_bootstrap_with_one_seed_agrees_with_scipy_paired_bootstrap():
    rng = np.random.default_rng(4)
    a = (rng.random(500) < 0.85).astype(float)
    b = np.where(rng.random(500) < 0.9, a, 1 - a)  # b mostly agrees with a
    result = stats.paired_bootstrap(a, b, n_resamples=20000, seed=0)
    reference = st.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                             n_resamples=20000, method="percentile",
                             random_state=np.random.default_rng(5)).confidence_interval
    assert result["difference"] == pytest.approx(np.mean(a - b))
    assert result["low"] == pytest.approx(reference.low, abs=0.005)
    assert result["high"] == pytest.approx(reference.high, abs=0.005)
    assert result["n_seeds"] == 1 and result["n_images"] == 500


def test_paired_bootstrap_over_seeds_is_wider_when_seeds_disagree():
    rng = np.random.default_rng(6)
    b = (rng.random((3, 300)) < 0.8).astype(float)
    steady = b.copy()
    steady[:, :15] = 1  # the same gain in every seed
    shaky = b.copy()
    shaky[0, :45] = 1  # one seed very different
    narrow = stats.paired_bootstrap(steady, b, seed=0)
    wide = stats.paired_bootstrap(shaky, b, seed=0)
    only_images = stats.paired_bootstrap(shaky, b, seed=0, resample_seeds=False)
    assert wide["high"] - wide["low"] > only_images["high"] - only_images["low"]
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]


def test_paired_bootstrap_refuses_unpaired_shapes():
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_bootstrap(np.ones((2, 10)), np.ones((3, 10)))


def test_reliability_and_ece_agree_with_scikit_learn():
    rng = np.random.default_rng(7)
    p = rng.random(2000)
    y = (rng.random(2000) < p**1.5).astype(int)  # over-confident about malignancy
    table = stats.reliability(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(table["observed"], prob_true, atol=1e-12)
    np.testing.assert_allclose(table["mean_predicted"], prob_pred, atol=1e-12)
    assert table["count"].sum() == 2000
    expected = np.sum(table["count"] / 2000 * np.abs(prob_true - prob_pred))
    assert stats.expected_calibration_error(y, p, n_bins=10) == pytest.approx(expected)
    assert stats.expected_calibration_error(y, p, n_bins=10) > 0.05


def test_ece_of_a_calibrated_model_is_small_and_of_a_constant_is_exact():
    rng = np.random.default_rng(8)
    p = rng.random(50000)
    y = (rng.random(50000) < p).astype(int)
    assert stats.expected_calibration_error(y, p) < 0.01
    # always 0.9 malignant on a set that is 30% malignant: ECE = |0.3 - 0.9|
    y = np.array([1] * 3 + [0] * 7)
    assert stats.expected_calibration_error(y, np.full(10, 0.9)) == pytest.approx(0.6)
    # probability exactly 1.0 falls in the last bin
    assert stats.reliability([1], [1.0], n_bins=10)["low"].item() == pytest.approx(0.9)


def test_calibration_refuses_bad_input():
    with pytest.raises(ValueError, match="0 \\(benign\\) or 1"):
        stats.reliability([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        stats.reliability([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="differ in length"):
        stats.reliability([0, 1], [0.1])


def test_intervals_of_equal_differences_have_width_zero_and_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stats.paired_t_interval([1.0, 2.0, 3.0], [0.5, 1.5, 2.5]) == (0.5, 0.5, 0.5)
        assert stats.bootstrap_interval(np.ones(20)) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="confidence must lie in"):
        stats.bootstrap_interval(np.arange(5.0), confidence=1.0)
    with pytest.raises(ValueError, match="confidence must lie in"):
        stats.paired_t_interval([1.0, 2.0], [0.0, 0.0], confidence=0.0)
