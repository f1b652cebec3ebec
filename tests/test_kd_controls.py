"""The pieces that tell whether the teacher's knowledge helps: controls,
fidelity, the size of each loss term's gradient, intervals over few seeds."""

import keras
import numpy as np
import pytest
from scipy import stats as st

from kd_utils import config, evaluation, models, reporting
from kd_utils.experiments import pipeline
from kd_utils.distillation import gradient_norms
from kd_utils.evaluation import softmax


def linear_student(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


@pytest.mark.parametrize("t2", [False, True])
def test_gradient_norms_match_a_hand_computation(t2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 8)]
    t = rng.normal(size=(8, 2)).astype("float32") * 3
    student = linear_student()
    alpha, T = 0.1, 5.0
    norms = gradient_norms(student, x, y, t, T, alpha=alpha, scale_by_t2=t2)
    s = np.asarray(student(x), dtype=np.float64)
    n = len(x)
    # d/ds of CE(y, softmax(s)) is softmax(s) - y; of CE(p, softmax(s / T)) it is (softmax(s / T) - p) / T.
    g_label = alpha * (softmax(s) - y) / n
    g_soft = (1 - alpha) * (softmax(s, T) - softmax(t, T)) / (T * n) * (T * T if t2 else 1.0)

    def norm(g):  # gradient of the kernel (x^T g) and of the bias (sum of g)
        return np.sqrt(np.sum((x.T.astype(np.float64) @ g) ** 2) + np.sum(g.sum(axis=0) ** 2))

    assert norms["label"] == pytest.approx(norm(g_label), rel=1e-4)
    assert norms["soft"] == pytest.approx(norm(g_soft), rel=1e-4)
    assert norms["ratio"] == pytest.approx(norm(g_soft) / norm(g_label), rel=1e-4)


def test_without_t2_the_soft_gradient_falls_as_one_over_t_squared():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 64)]
    t = rng.normal(size=(64, 2)).astype("float32")
    student = linear_student(1)
    soft = {T: gradient_norms(student, x, y, t, T)["soft"] for T in (10.0, 50.0)}
    assert soft[10.0] / soft[50.0] == pytest.approx(25.0, rel=0.05)
    scaled = {T: gradient_norms(student, x, y, t, T, scale_by_t2=True)["soft"] for T in (10.0, 50.0)}
    assert scaled[10.0] / scaled[50.0] == pytest.approx(1.0, rel=0.05)


def test_control_logits_are_built_as_specified():
    logits = np.random.default_rng(2).normal(size=(50, 2)).astype("float32")
    uniform = pipeline.control_logits(logits, "uniform", seed=0)
    for T in (1.0, 10.0):
        targets = softmax(uniform, T)
        np.testing.assert_allclose(targets, 0.5)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0)
    shuffled = pipeline.control_logits(logits, "shuffled", seed=0)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, logits))  # a permutation of the rows
    assert not np.array_equal(shuffled, logits)
    np.testing.assert_array_equal(shuffled, pipeline.control_logits(logits, "shuffled", seed=0))  # seeded
    assert pipeline.control_logits(logits, None, seed=0) is logits
    with pytest.raises(ValueError, match="teacher_control must be one of"):
        pipeline.control_logits(logits, "random", seed=0)


def test_fidelity_is_agreement_and_kl_at_t_1():
    t = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    f = evaluation.fidelity(s, t)
    p, q = softmax(t), softmax(s)
    assert f["kl"] == pytest.approx(np.mean(np.sum(p * np.log(p / q), axis=1)))
    assert f["agreement"] == pytest.approx(np.mean(s.argmax(1) == t.argmax(1)))
    assert evaluation.fidelity(t, t) == {"agreement": 1.0, "kl": pytest.approx(0.0, abs=1e-12)}
    with pytest.raises(ValueError, match="same"):
        evaluation.fidelity(s[:2], t)


def test_the_teacher_check_warns_only_when_the_teacher_does_not_beat_the_student():
    students = [{"best_val_accuracy": 0.80}, {"best_val_accuracy": 0.84}]
    assert reporting.teacher_check({"best_val_accuracy": 0.90}, students) is None
    warning = reporting.teacher_check({"best_val_accuracy": 0.62}, students)
    assert warning.startswith("WARNING") and "0.620" in warning and "0.820" in warning


@pytest.fixture(scope="module")
def tiny(tiny_manifest):
    profile = config.get_profile("smoke", image_size=32, batch_size=32, seeds=(1, 2), student_epochs=1)
    manifest = tiny_manifest
    keras.utils.set_random_seed(0)
    return profile, manifest, models.build_dsnet(32)


def test_control_runs_are_their_own_runs_and_record_fidelity(tiny):
    profile, manifest, teacher = tiny
    real = pipeline.repeat(profile, manifest, teacher)
    uniform = pipeline.repeat(profile, manifest, teacher, teacher_control="uniform")
    shuffled = pipeline.repeat(profile, manifest, teacher, teacher_control="shuffled")
    baseline = pipeline.repeat(profile, manifest, teacher, alpha=1.0)
    assert len({r["key"] for r in real + uniform + shuffled + baseline}) == 8
    assert all("_uniform_s" in r["run_dir"] for r in uniform) and uniform[0]["config"]["teacher_control"] == "uniform"
    assert shuffled[0]["config"]["model"] == "DSNet with a shuffled teacher"
    for r in real + uniform + shuffled:
        assert 0.0 <= r["test"]["fidelity"]["agreement"] <= 1.0 and r["test"]["fidelity"]["kl"] >= 0.0
    assert "fidelity" not in baseline[0]["test"]  # no teacher in that run
    train = pipeline.datasets(profile, manifest, teacher=teacher, teacher_control="uniform")[0]
    x, _ = next(iter(train.for_epoch(0)))
    np.testing.assert_array_equal(x["teacher_logits"].numpy(), 0.0)
    table = reporting.kd_table({"real": real, "uniform": uniform}, {"real": baseline, "uniform": baseline},
                               n_resamples=200)
    accs = reporting.values(real) - reporting.values(baseline)
    low, high = st.ttest_rel(reporting.values(real), reporting.values(baseline)).confidence_interval()
    assert table.loc["real", "gain t95% low"] == pytest.approx(low) and table.loc["real", "gain t95% high"] == pytest.approx(high)
    assert table.loc["real", "KD gain"] == pytest.approx(accs.mean())
    assert table.loc["uniform", "agreement"] == pytest.approx(np.mean([r["test"]["fidelity"]["agreement"] for r in uniform]))


def _fake_run(tmp_path, name, seed, labels, logits, val):
    folder = tmp_path / f"{name}-{seed}"
    folder.mkdir()
    np.savez(folder / reporting.PREDICTIONS_FILE, labels=labels, logits=logits)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == labels))
    return {"config": {"seed": seed}, "run_dir": str(folder), "best_val_accuracy": val,
            "test": {"accuracy": accuracy}, "fidelity": {"agreement": 0.9, "kl": 0.1}}


def test_kd_summary_names_the_data_the_seeds_and_both_validation_accuracies(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    right = np.eye(2)[labels] * 2.0

    def runs(name, flips, vals):
        out = []
        for seed, n, val in zip((10, 11, 12, 13, 14), flips, vals):
            logits = right.copy()
            logits[:n] = logits[:n, ::-1]  # the first n images called wrong
            out.append(_fake_run(tmp_path, name, seed, labels, logits, val))
        return out

    kd = runs("kd", (5, 6, 4, 5, 5), (0.90,) * 5)
    no_teacher = runs("none", (8, 7, 9, 8, 8), (0.86, 0.87, 0.85, 0.86, 0.86))
    uniform = runs("uniform", (9, 9, 9, 9, 9), (0.84,) * 5)
    teacher = {"test": {"accuracy": 0.93}, "best_val_accuracy": 0.925}
    manifest = type("M", (), {"source": "folder", "info": {"root": "/x/data/melanoma_cancer_dataset"}})()
    summary = reporting.kd_summary(teacher, kd, {"no teacher": no_teacher, "uniform": uniform}, "no teacher",
                                   {"temperature": 10.0}, n_resamples=200, data=reporting.dataset_name(manifest))
    assert summary["data"] == f"kaggle:{config.KAGGLE_HANDLE}"
    assert summary["seeds"] == [10, 11, 12, 13, 14] and summary["n_seeds"] == 5
    assert summary["teacher_val_accuracy"] == 0.925 and summary["teacher_accuracy"] == 0.93
    assert summary["dsnet_nokd_val_accuracy"] == pytest.approx(0.86)
    assert summary["dsnet_nokd_accuracy"] == pytest.approx(1 - 40 / 250)
    assert summary["best_control"] == "no teacher"
    assert summary["kd_gain"] == pytest.approx((40 - 25) / 250)
    synthetic = type("M", (), {"source": "synthetic", "info": {"root": "/x"}})()
    assert "generated" in reporting.dataset_name(synthetic)
