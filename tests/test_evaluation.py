import numpy as np
import pytest
import sklearn.metrics as skm
import tensorflow as tf

from kd_utils import evaluation, models


def random_case(seed, n=200, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    logits = rng.normal(size=(n, 2)) + np.stack([1 - y, y], axis=1) * 1.5
    if ties:
        logits = np.round(logits, 1)  # many tied scores
    return y, logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_and_per_class_metrics_match_sklearn(seed):
    y, logits = random_case(seed)
    pred = logits.argmax(1)
    np.testing.assert_array_equal(evaluation.confusion_matrix(y, pred), skm.confusion_matrix(y, pred))
    report = evaluation.per_class_report(y, pred)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    for k, name in enumerate(["benign", "malignant"]):
        assert report[name]["precision"] == pytest.approx(p[k])
        assert report[name]["recall"] == pytest.approx(r[k])
        assert report[name]["f1"] == pytest.approx(f[k])
        assert report[name]["support"] == s[k]


def test_undefined_precision_is_zero_like_sklearn():
    y = np.array([0, 0, 1, 1])
    pred = np.zeros(4, dtype=int)  # never predicts malignant
    report = evaluation.per_class_report(y, pred)
    assert report["malignant"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert report["benign"]["precision"] == pytest.approx(skm.precision_score(y, pred, pos_label=0))


@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn_from_probabilities(ties):
    y, logits = random_case(3, ties=ties)
    scores = evaluation.softmax(logits)[:, 1]
    fpr, tpr, thr = evaluation.roc_curve(y == 1, scores)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert evaluation.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)


def test_auc_uses_probabilities_not_labels():
    y = np.array([0, 0, 1, 1])
    logits = np.array([[2.0, 0.0], [0.1, 0.0], [0.0, 0.2], [0.0, 3.0]])
    # Every argmax prediction is right and the scores rank perfectly.
    pred = evaluation.Predictions(labels=y, logits=logits, seconds=0.1)
    record = evaluation.metrics_from_predictions(pred)
    assert record["auc"]["malignant"] == pytest.approx(1.0)
    assert record["accuracy"] == pytest.approx(1.0)
    logits[1] = [0.0, 0.1]  # misclassified, but still ranked below both malignant
    record = evaluation.metrics_from_predictions(evaluation.Predictions(y, logits, 0.1))
    assert record["accuracy"] == pytest.approx(0.75)
    assert record["auc"]["malignant"] == pytest.approx(1.0)


def test_softmax_is_row_wise_and_tempered():
    logits = np.array([[1.0, 2.0], [1000.0, 1000.0]])
    p = evaluation.softmax(logits)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p[1], [0.5, 0.5])
    np.testing.assert_allclose(evaluation.softmax(logits, 10.0)[0], np.exp([0.1, 0.2]) / np.exp([0.1, 0.2]).sum())


def test_errors_on_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        evaluation.roc_curve(np.ones(4, dtype=bool), np.arange(4.0))
    with pytest.raises(ValueError, match="differ in shape"):
        evaluation.confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="Labels must lie"):
        evaluation.confusion_matrix([0, 2], [0, 1])


def test_evaluate_runs_a_model_over_a_dataset():
    model = models.build_dsnet(24)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 24, 24, 3)).astype(np.uint8)
    y = np.eye(2, dtype=np.float32)[[0, 1] * 5]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    record = evaluation.evaluate(model, ds)
    logits = np.asarray(model(x))
    assert record["n"] == 10
    assert record["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y.argmax(1)))
    assert record["params"]["trainable"] == models.count_params(model)["trainable"]
    assert record["prediction_seconds"] > 0
    assert sum(map(sum, record["confusion_matrix"])) == 10
    assert record["auc"]["malignant"] == pytest.approx(skm.roc_auc_score(y[:, 1], evaluation.softmax(logits)[:, 1]), abs=1e-6)


@pytest.mark.parametrize("eager", [False, True])
def test_predict_warms_a_traced_model_up_off_the_clock_and_an_eager_one_not_at_all(monkeypatch, eager):
    model = models.build_dsnet(24)
    model.run_eagerly = eager
    x = np.random.default_rng(0).integers(0, 256, size=(10, 24, 24, 3)).astype(np.uint8)
    y = np.eye(2, dtype=np.float32)[[0, 1] * 5]
    batches = []
    real = model.predict_on_batch
    monkeypatch.setattr(model, "predict_on_batch", lambda images: batches.append(len(images)) or real(images))
    predictions = evaluation.predict(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    # a traced model: one full batch and one of a single image first (tracing), then the 3 batches
    assert batches == ([] if eager else [4, 1]) + [4, 4, 2]
    np.testing.assert_allclose(predictions.logits, np.asarray(model(x)), rtol=1e-5, atol=1e-5)
