import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sklearn.metrics as skm  # noqa: E402

from kd_utils import evaluation, plots  # noqa: E402


def drawn_counts(ax) -> np.ndarray:
    """The counts written in the cells, laid out as the matrix is drawn (row = y, column = x)."""
    cells = np.full((2, 2), -1)
    for text in ax.texts:
        x, y = text.get_position()
        cells[int(round(y)), int(round(x))] = int(text.get_text().split("\n")[0])
    return cells


def random_predictions(seed, n=150):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2)) + np.stack([1 - y, y], axis=1) * 0.8
    return y, logits


def test_confusion_matrix_figure_shows_sklearns_counts():
    y, logits = random_predictions(0)
    record = evaluation.metrics_from_predictions(evaluation.Predictions(y, logits, 0.1))
    seeds = [random_predictions(s) for s in (1, 2, 3)]
    records = [evaluation.metrics_from_predictions(evaluation.Predictions(a, b, 0.1)) for a, b in seeds]
    fig = plots.confusion_matrices({"one run": record, "three seeds": records,
                                    "labels": (y, logits.argmax(1))}, "test")
    assert isinstance(fig, matplotlib.figure.Figure)
    one, three, raw = fig.axes[:3]
    expected = skm.confusion_matrix(y, logits.argmax(1))
    assert expected[0, 1] != expected[1, 0]  # a transposed matrix would not pass
    np.testing.assert_array_equal(drawn_counts(one), expected)
    np.testing.assert_array_equal(drawn_counts(raw), expected)
    summed = sum(skm.confusion_matrix(a, b.argmax(1)) for a, b in seeds)
    np.testing.assert_array_equal(drawn_counts(three), summed)
    # colour: share of the true class, so each row sums to 1 and the diagonal is the recall
    share = np.asarray(one.images[0].get_array())
    np.testing.assert_allclose(share, expected / expected.sum(axis=1, keepdims=True))
    recall = skm.recall_score(y, logits.argmax(1), average=None)
    np.testing.assert_allclose(np.diag(share), recall)
    assert [t.get_text() for t in one.get_xticklabels()] == ["benign", "malignant"]
    assert one.get_xlabel() == "predicted" and one.get_ylabel() == "true"
    assert "3 seeds summed" in three.get_title()
    plt.close(fig)


def test_confusion_matrix_figure_refuses_an_empty_list():
    with pytest.raises(ValueError, match="empty list"):
        plots.confusion_matrices({"none": []}, "test")
    plt.close("all")


def test_temperature_sweep_draws_each_loss_form_and_the_paper():
    import pandas as pd

    def table(test, val):
        return pd.DataFrame({"test accuracy": test, "test sd": [0.01, 0.02], "val accuracy": val},
                            index=pd.Index([3.0, 10.0], name="T"))

    forms = {"paper eq. (5)": table([0.8, 0.82], [0.79, 0.8]), "eq. (5) with T^2": table([0.85, 0.9], [0.84, 0.88])}
    fig = plots.temperature_sweep(forms, {3: 0.828, 10: 0.917}, "Table 1")
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert sorted(labels) == sorted(["paper eq. (5): test (mean ± sd)", "paper eq. (5): validation", "eq. (5) with T^2: test (mean ± sd)",
                      "eq. (5) with T^2: validation", "paper, test (one run)"])
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["eq. (5) with T^2: validation"].get_ydata(), [0.84, 0.88])
    plt.close(fig)
