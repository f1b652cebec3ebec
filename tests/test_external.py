"""External validation (`python -m kd_utils evaluate`, kd_utils.tools.external): the metrics against
scikit-learn, the bootstrap intervals, the command end to end on the CC0 sample, and bad input."""

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from cli_child import run_cli_cases
from kd_utils import data, paths
from kd_utils.tools import deploy, external
from kd_utils.__main__ import main

SIZE = 32

# Fixed labels and probabilities: ties across classes, and values exactly at the threshold.
LABELS = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1])
PROBS = np.array([0.1, 0.2, 0.5, 0.3, 0.7, 0.05, 0.4, 0.9, 0.5, 0.6, 0.3, 0.8,
                  0.6, 0.99, 0.2, 0.45, 0.7, 0.0, 0.3, 1.0])


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.65])
def test_binary_metrics_match_scikit_learn(threshold):
    m = external.binary_metrics(LABELS, PROBS, threshold, n_resamples=200)
    called = (PROBS >= threshold).astype(int)  # predict's rule: malignant at or above the threshold
    assert (m["n"], m["n_benign"], m["n_malignant"]) == (20, 11, 9)
    assert m["accuracy"]["value"] == pytest.approx(skm.accuracy_score(LABELS, called))
    assert m["auc"]["value"] == pytest.approx(skm.roc_auc_score(LABELS, PROBS))
    assert m["sensitivity"]["value"] == pytest.approx(skm.recall_score(LABELS, called, pos_label=1))
    assert m["specificity"]["value"] == pytest.approx(skm.recall_score(LABELS, called, pos_label=0))
    assert m["confusion_matrix"] == skm.confusion_matrix(LABELS, called, labels=[0, 1]).tolist()
    assert m["malignant_call_rate"] == pytest.approx(called.mean())


def test_every_resample_matches_scikit_learn_on_the_same_draw():
    """The vectorised bootstrap (counts per image, rank-sum AUC with ties as one half) gives, per
    resample, scikit-learn's numbers on the images drawn with the same generator."""
    correct = (PROBS >= 0.5) == LABELS
    samples = external._bootstrap(LABELS, PROBS, correct, 50, seed=7)
    draws = np.random.default_rng(7).integers(0, LABELS.size, (50, LABELS.size))
    for k, idx in enumerate(draws):
        y, p = LABELS[idx], PROBS[idx]
        assert samples["accuracy"][k] == pytest.approx(correct[idx].mean())
        if len(set(y)) < 2:
            assert np.isnan(samples["auc"][k]) and np.isnan(samples["sensitivity"][k])
            continue
        assert samples["auc"][k] == pytest.approx(skm.roc_auc_score(y, p))
        assert samples["sensitivity"][k] == pytest.approx(skm.recall_score(y, p >= 0.5, pos_label=1))
        assert samples["specificity"][k] == pytest.approx(skm.recall_score(y, p >= 0.5, pos_label=0))


def _noisy(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return labels, np.clip(0.25 * labels + 0.75 * rng.random(n), 0, 1)


def test_bootstrap_interval_contains_the_estimate_is_seeded_and_narrows_with_more_images():
    labels, p = _noisy(200)
    m = external.binary_metrics(labels, p, n_resamples=1000, seed=3)
    for name in external.METRICS:
        assert m[name]["low"] <= m[name]["value"] <= m[name]["high"], name
        assert m[name]["low"] < m[name]["high"], name
    assert m == external.binary_metrics(labels, p, n_resamples=1000, seed=3)
    assert m["auc"] != external.binary_metrics(labels, p, n_resamples=1000, seed=4)["auc"]
    # The same images four times over: the same estimates, intervals about half as wide.
    big = external.binary_metrics(np.tile(labels, 4), np.tile(p, 4), n_resamples=1000, seed=3)
    for name in external.METRICS:
        assert big[name]["value"] == pytest.approx(m[name]["value"])
        width, big_width = m[name]["high"] - m[name]["low"], big[name]["high"] - big[name]["low"]
        assert big_width < 0.7 * width, name
    assert m["bootstrap"] == {"method": "percentile", "n_resamples": 1000, "confidence": 0.95, "seed": 3,
                              "two_class_resamples": 1000}


def test_a_perfect_model_has_auc_interval_one_and_small_samples_skip_one_class_resamples():
    labels = np.array([0, 0, 0, 1, 1, 1])
    m = external.binary_metrics(labels, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], n_resamples=500)
    for name in external.METRICS:
        assert (m[name]["value"], m[name]["low"], m[name]["high"]) == (1.0, 1.0, 1.0), name
    # With 6 images about 2 * 0.5^6 of the resamples hold one class: left out of AUC/sens/spec only.
    assert 470 < m["bootstrap"]["two_class_resamples"] < 500


def test_bootstrap_of_a_thousand_images_is_fast():
    labels, p = _noisy(1000)
    start = time.perf_counter()
    external.binary_metrics(labels, p, n_resamples=2000)
    assert time.perf_counter() - start < 3.0  # ~0.15 s on 2 shared cores; a loop over resamples takes seconds


def test_one_class_is_refused():
    with pytest.raises(data.DataError, match="no malignant images .*cannot be computed with one class"):
        external.binary_metrics([0, 0, 0], [0.1, 0.5, 0.9])


# --------------------------------------------------------------------------- end to end, the CC0 sample


@pytest.fixture(scope="module")
def sample():
    """The 24 CC0 sample images (12 per class) with their labels from labels.csv."""
    frame = pd.read_csv(paths.sample_dir() / "labels.csv")
    return [(paths.sample_dir() / name, int(label)) for name, label in zip(frame.filename, frame.label)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small untrained two-logit model at 32 px, saved as .keras."""
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    path = tmp_path_factory.mktemp("external") / "tiny.keras"
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(path)
    return path


def _lay_out(root, sample, folder_of):
    """Copies each sample image to ``root / folder_of(i, label) / name``."""
    for i, (path, label) in enumerate(sample):
        target = root / folder_of(i, label) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def test_evaluate_command_json_agrees_with_predict(tiny_model, sample, tmp_path, capsys):
    folder = _lay_out(tmp_path / "clinic", sample, lambda i, y: ["Benign", "MALIGNANT/deeper"][y])
    (folder / "Benign" / "broken.jpg").write_text("not an image")
    code = main(["evaluate", str(tiny_model), str(folder), "--json", "--resamples", "300"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["n"], doc["n_benign"], doc["n_malignant"], doc["image_size"]) == (24, 12, 12, SIZE)
    assert doc["sources"] == {"Benign": 13, "MALIGNANT": 12} and doc["split"] is None
    assert [s["path"] for s in doc["skipped"]] == [str(folder / "Benign" / "broken.jpg")]
    assert "not an image" in doc["skipped"][0]["error"] and "broken.jpg: not an image" in err
    # predict's probabilities on the same images, labels from labels.csv
    results = deploy.predict_paths([p for p, _ in sample], tiny_model)
    p = np.array([r.malignant_probability for r in results])
    labels = np.array([y for _, y in sample])
    assert doc["accuracy"]["value"] == pytest.approx(np.mean((p >= 0.5) == labels))
    assert doc["auc"]["value"] == pytest.approx(skm.roc_auc_score(labels, p), abs=1e-6)
    by_name = {row["path"].split("/")[-1]: row for row in doc["images"]}
    for (path, label), r in zip(sample, results):
        assert by_name[path.name]["label"] == data.CLASS_NAMES[label]
        assert by_name[path.name]["malignant_probability"] == pytest.approx(r.malignant_probability, abs=1e-6)
    assert doc["bootstrap"]["n_resamples"] == 300 and "not a diagnostic device" in doc["disclaimer"]


def test_evaluate_command_kaggle_layout_with_split_and_the_table(tiny_model, sample, tmp_path, capsys):
    folder = _lay_out(tmp_path / "kaggle", sample,
                      lambda i, y: f"{'test' if i % 3 == 0 else 'train'}/{data.CLASS_NAMES[y]}")
    in_test = sum(i % 3 == 0 for i in range(len(sample)))
    assert main(["evaluate", str(tiny_model), str(folder), "--split", "test", "--json", "--resamples", "200"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == in_test and doc["split"] == "test"
    assert set(doc["sources"]) == {"test/benign", "test/malignant"}
    assert all("/test/" in row["path"] for row in doc["images"])
    assert main(["evaluate", str(tiny_model), str(folder), "--json", "--resamples", "200"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == len(sample) and set(doc["sources"]) == {"train/benign", "train/malignant",
                                                                "test/benign", "test/malignant"}
    assert main(["evaluate", str(tiny_model), str(folder), "--split", "test", "--threshold", "0.3"]) == 0
    out = capsys.readouterr().out
    for words in ("not a diagnostic device", "split test", f"n = {in_test}", "p >= 0.3", "AUC", "sensitivity",
                  "specificity", "95% interval", "malignant-call rate", "Confusion matrix (rows true"):
        assert words in out, words


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_and_exit_2_before_tensorflow(tiny_model, sample, tmp_path):
    flat = _lay_out(tmp_path / "flat", sample, lambda i, y: data.CLASS_NAMES[y])
    one_class = _lay_out(tmp_path / "one", sample[:5], lambda i, y: "benign")
    (tmp_path / "unlabelled" / "images").mkdir(parents=True)
    (tmp_path / "model.txt").write_text("a model?")
    model = str(tiny_model)
    cases = {
        "missing-folder": (["evaluate", model, str(tmp_path / "nope")], ["nope: no such folder", "benign/"]),
        "no-class-folders": (["evaluate", model, str(tmp_path / "unlabelled")],
                             ["no benign/ or malignant/ folder", "found images/"]),
        "one-class": (["evaluate", model, str(one_class)],
                      ["no malignant images", "cannot be computed with one class"]),
        "txt-model": (["evaluate", str(tmp_path / "model.txt"), str(flat)],
                      ["Unsupported model file", "model.txt", ".keras or .tflite", "'.txt'"]),
        "split-absent": (["evaluate", model, str(flat), "--split", "test"], ["no test/ folder"]),
        "bad-threshold": (["evaluate", model, str(flat), "--threshold", "2"], ["--threshold", "between 0 and 1"]),
    }
    results = run_cli_cases([(k, argv) for k, (argv, _) in cases.items()])
    for case_id, (_, words) in cases.items():
        result = results[case_id]
        lines = result["stderr"].splitlines()
        assert result["code"] == 2 and result["stdout"] == "", (case_id, result)
        assert len(lines) == 1 and lines[0].startswith("error: "), (case_id, result["stderr"])
        for word in words:
            assert word in lines[0], (case_id, word, lines[0])
    assert results["_modules"] == []


def test_damaged_model_and_no_readable_image_exit_2(tiny_model, sample, tmp_path, capsys):
    flat = _lay_out(tmp_path / "flat", sample, lambda i, y: data.CLASS_NAMES[y])
    (tmp_path / "damaged.keras").write_text("not a model")
    assert main(["evaluate", str(tmp_path / "damaged.keras"), str(flat)]) == 2
    assert "damaged.keras: damaged or not a Keras/TFLite model" in capsys.readouterr().err
    unreadable = tmp_path / "unreadable"
    for name in data.CLASS_NAMES:
        (unreadable / name).mkdir(parents=True)
        (unreadable / name / "x.jpg").write_text("not an image")
    assert main(["evaluate", str(tiny_model), str(unreadable)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: {unreadable}: none of the 2 image file(s) could be read")
    assert "Traceback" not in err


def test_compare_puts_each_models_runs_beside_their_in_distribution_accuracy(tiny_model, sample, tmp_path):
    folder = _lay_out(tmp_path / "clinic", sample, lambda i, y: data.CLASS_NAMES[y])
    runs = {"tiny": [{"config": {"seed": 10}, "test": {"accuracy": 0.9}},
                     {"config": {"seed": 11}, "test": {"accuracy": 0.8}}],
            "tiny again": [{"test": {"accuracy": 0.7}}]}
    loaded = []
    by_model, by_run = external.compare(runs, folder, lambda r: (loaded.append(r), tiny_model)[1], n_resamples=200)
    assert len(loaded) == 3 and list(by_model.index) == ["tiny", "tiny again"]
    single = external.evaluate_folder(tiny_model, folder, n_resamples=200).metrics
    assert by_model.loc["tiny", "runs"] == 2 and by_model.loc["tiny again", "runs"] == 1
    assert by_model.loc["tiny", "test accuracy (in-distribution)"] == pytest.approx(0.85)
    assert by_model.loc["tiny", "accuracy"] == pytest.approx(single["accuracy"]["value"])
    assert by_model.loc["tiny", "gap (accuracy)"] == pytest.approx(single["accuracy"]["value"] - 0.85)
    assert by_model.loc["tiny", "accuracy sd"] == pytest.approx(0.0)
    assert list(by_run.seed[:2]) == [10, 11] and by_run.loc[0, "auc low"] == single["auc"]["low"]
