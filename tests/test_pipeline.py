"""Repeated seeds, the no-teacher baseline, validation-only choices and the
statistics built on the stored test predictions, on a tiny profile."""

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import keras
import numpy as np
import pytest

from kd_utils import config, models, reporting
from kd_utils.experiments import choices, notebook, pipeline, runs


@pytest.fixture(scope="module")
def tiny(tiny_manifest):
    profile = config.get_profile("smoke", image_size=32, batch_size=32, seeds=(1, 2), student_epochs=2)
    manifest = tiny_manifest
    keras.utils.set_random_seed(0)
    teacher = models.build_dsnet(32)  # any logits model can teach; this one is fast
    return profile, manifest, teacher


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def test_runs_repeat_over_seeds_and_keep_their_test_predictions(tiny, artifacts):
    profile, manifest, teacher = tiny
    kd = pipeline.repeat(profile, manifest, teacher)
    no_kd = pipeline.repeat(profile, manifest, teacher, alpha=1.0)
    assert [r["config"]["seed"] for r in kd] == [1, 2]
    assert [r["run_dir"].rsplit("/", 1)[-1] for r in kd] == [f"dsnet_T10_a0.1_b32_s{s}-{r['key']}"
                                                              for s, r in zip((1, 2), kd)]
    assert [r["run_dir"].rsplit("/", 1)[-1] for r in no_kd] == [f"dsnet_nokd_b32_s{s}-{r['key']}"
                                                                 for s, r in zip((1, 2), no_kd)]
    assert len({r["key"] for r in kd + no_kd}) == 4
    assert no_kd[0]["config"]["temperature"] is None and no_kd[0]["config"]["model"] == "DSNet without teacher"
    n_test = len(manifest.split("test"))
    correct = reporting.correct_matrix(kd)
    assert correct.shape == (2, n_test)
    np.testing.assert_allclose(correct.mean(axis=1), [r["test"]["accuracy"] for r in kd])
    # Read against the manifest's test labels: the same matrix, or refused when they are not the runs' images.
    labels = manifest.split("test").label.to_numpy()
    np.testing.assert_array_equal(reporting.correct_matrix(kd, labels=labels), correct)
    one_swapped = labels.copy()
    one_swapped[0] = 1 - one_swapped[0]
    for wrong in (one_swapped, labels[:-1]):
        with pytest.raises(ValueError, match=f"test labels that are not the {len(wrong)} given"):
            reporting.correct_matrix(kd, labels=wrong)
    gain = reporting.kd_gain(kd, no_kd, n_resamples=500)
    assert gain["difference"] == pytest.approx(np.mean([a["test"]["accuracy"] - b["test"]["accuracy"]
                                                        for a, b in zip(kd, no_kd)]))
    assert gain["low"] <= gain["difference"] <= gain["high"]
    table = reporting.kd_table({"DSNet": kd}, {"DSNet": no_kd}, n_resamples=500)
    assert table.loc["DSNet", "seeds"] == 2
    assert table.loc["DSNet", "accuracy"] == pytest.approx(np.mean([r["test"]["accuracy"] for r in kd]))
    assert table.loc["DSNet", "KD gain"] == pytest.approx(gain["difference"])
    calibration = reporting.calibration_table({"DSNet": kd})
    assert 0.0 <= calibration.loc["DSNet", "ECE"] <= 1.0 and calibration.loc["DSNet", "runs"] == 2
    # Asking again reloads every run instead of training it.
    again = pipeline.repeat(profile, manifest, teacher)
    assert [r["test"] for r in again] == [r["test"] for r in kd]


def test_the_run_without_a_teacher_needs_none_and_is_the_same_run(tiny, tmp_path, monkeypatch):
    """teacher=None at alpha = 1: the key of the run with a teacher, and its weights to the bit."""
    profile, manifest, teacher = tiny
    profile = profile.replace(seeds=(1,), student_epochs=1)
    trained = {}
    for name, given in (("teacher", teacher), ("none", None)):
        monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / name))  # each trains its own run
        model, record = pipeline.distill_student(profile, manifest, given, alpha=1.0, seed=1, verbose=0)
        assert record["run_dir"].startswith(str(tmp_path / name))
        test = {k: v for k, v in record["test"].items() if k != "prediction_seconds"}
        trained[name] = (record["key"], [w.tobytes() for w in model.get_weights()], test)
    assert trained["teacher"] == trained["none"]
    with pytest.raises(ValueError, match="teacher=None needs alpha=1"):
        pipeline.distill_student(profile, manifest, None, seed=1, verbose=0)  # the profile's alpha, 0.1


def test_an_eager_profile_trains_the_student_graph_mode_trains(tiny, artifacts):
    """smoke runs its steps eagerly (tracing would be most of its time): same
    training, same predictions, a run of its own that says so."""
    profile, manifest, teacher = tiny
    profile = profile.replace(seeds=(1,), student_epochs=1)
    assert profile.run_eagerly and not config.get_profile("cpu").run_eagerly
    eager = pipeline.repeat(profile, manifest, teacher)[0]
    graph = pipeline.repeat(profile.replace(run_eagerly=False), manifest, teacher)[0]
    assert eager["config"]["run_eagerly"] is True and "run_eagerly" not in graph["config"]
    assert eager["key"] != graph["key"]
    assert eager["best_val_accuracy"] == pytest.approx(graph["best_val_accuracy"])
    logits = [np.load(os.path.join(r["run_dir"], reporting.PREDICTIONS_FILE))["logits"] for r in (eager, graph)]
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-4, atol=1e-4)
    loaded = pipeline.repeat(profile, manifest, teacher)[0]  # found again, not trained again
    assert loaded["key"] == eager["key"] and loaded["train_seconds"] == eager["train_seconds"]


def test_pairing_refuses_runs_of_other_seeds(tiny, artifacts):
    profile, manifest, teacher = tiny
    kd = pipeline.repeat(profile, manifest, teacher, seeds=[1])
    no_kd = pipeline.repeat(profile, manifest, teacher, alpha=1.0, seeds=[2])
    with pytest.raises(ValueError, match="same seeds"):
        reporting.kd_gain(kd, no_kd)


def test_choices_use_mean_validation_accuracy_only():
    def run(val, test):
        return {"best_val_accuracy": val, "test": {"accuracy": test}}

    records = {1.0: [run(0.70, 0.99), run(0.72, 0.99)], 10.0: [run(0.80, 0.50), run(0.76, 0.50)], 50.0: run(0.78, 0.9)}
    assert choices.choose_on_validation(records) == 10.0  # best mean validation, whatever the test says
    assert choices.choose_on_validation({3.0: run(0.8, 0), 5.0: run(0.8, 1)}) == 3.0  # ties: the first


def test_final_student_is_the_chosen_setting_and_best_validation_seed(tiny, artifacts):
    profile, manifest, teacher = tiny
    with pytest.raises(pipeline.MissingStepError, match="04_temperature_sweep"):
        choices.final_student_path(profile, manifest=manifest, teacher=teacher)
    records = pipeline.repeat(profile, manifest, teacher, temperature=3.0, alpha=0.5)
    choices.save_choice(profile, "temperature", 3.0)
    choices.save_choice(profile, "alpha", 0.5)
    choices.save_choice(profile, "scale_by_t2", False)
    best = max(records, key=lambda r: r["best_val_accuracy"])
    found = choices.final_student_path(profile, manifest=manifest, teacher=teacher)
    assert str(found) == os.path.join(best["run_dir"], "best.keras")
    model, record = pipeline.load_student(profile, temperature=3.0, alpha=0.5, seed=best["config"]["seed"],
                                          manifest=manifest, teacher=teacher)
    assert record["key"] == best["key"] and record["test"] == best["test"]
    assert json.loads((artifacts / "smoke" / "chosen_alpha.json").read_text())["chosen_on"].startswith("mean validation")


def test_kl_and_ce_soft_losses_train_the_same_student(tiny, artifacts):
    """Equal gradients: from the same seed the two students end up (numerically) equal."""
    profile, manifest, teacher = tiny
    ce_model, ce = pipeline.distill_student(profile, manifest, teacher, seed=1, verbose=0)
    kl_model, kl = pipeline.distill_student(profile, manifest, teacher, seed=1, soft_loss="kl", verbose=0)
    assert f"_kl_s1-{kl['key']}" in kl["run_dir"] and kl["loss"]["distillation_loss"] == "SoftKLDivergence"
    history_ce, history_kl = ce["history"], kl["history"]
    # the soft loss values differ (by the teacher's entropy) ...
    assert history_ce["distillation_loss"][0] > history_kl["distillation_loss"][0] + 0.1
    # ... the trained students do not
    for a, b in zip(ce_model.get_weights(), kl_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-4)
    assert ce["test"]["accuracy"] == pytest.approx(kl["test"]["accuracy"], abs=0.02)


def test_bad_soft_loss_is_refused(tiny, artifacts):
    profile, manifest, teacher = tiny
    with pytest.raises(ValueError, match="soft_loss"):
        pipeline.distill_student(profile, manifest, teacher, soft_loss="mse")


MIRRORED = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from kd_utils import models
    from kd_utils.distillation import Distiller

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 32, 32, 3)).astype("uint8")
    labels = np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]

    def one_step(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(3)
            teacher = models.build_dsnet(32)
            student = models.build_dsnet(32, dropout=0.0)
            distiller = Distiller(student=student, teacher=teacher)
            distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=[keras.metrics.CategoricalAccuracy()],
                              alpha=0.1, temperature=10.0)
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
        before = distiller.evaluate(ds, verbose=0, return_dict=True)
        history = distiller.fit(ds, epochs=1, verbose=0)
        return before, history.history["loss"][0], [w.copy() for w in student.get_weights()]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    single = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))
    multi = one_step(mirrored)
    print("loss", single[0]["loss"], multi[0]["loss"], "train loss", single[1], multi[1])
    np.testing.assert_allclose(single[0]["loss"], multi[0]["loss"], rtol=1e-5)
    np.testing.assert_allclose(single[0]["distillation_loss"], multi[0]["distillation_loss"], rtol=1e-5)
    np.testing.assert_allclose(single[1], multi[1], rtol=1e-5)
    for a, b in zip(single[2], multi[2]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    print("same")
""")


def test_distiller_under_mirrored_strategy_matches_one_device():
    """Two logical CPU devices, one batch split between them: the same loss and the same update."""
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "same" in result.stdout


def test_mixed_precision_scope_trains_in_float16_and_restores_the_policy():
    import tensorflow as tf

    profile = config.get_profile("smoke", mixed_precision=True, jit_compile=True)
    if not tf.config.list_physical_devices("GPU"):
        assert runs.accelerator_options(profile) == {}  # float16 on a CPU is slower: off
    assert runs.accelerator_options(config.get_profile("smoke")) == {}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 32, 32, 3)).astype("uint8")
    labels = np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]
    with runs.build_scope(None, mixed_precision=True):
        keras.utils.set_random_seed(0)
        student = models.build_dsnet(32)
        distiller = pipeline.Distiller(student=student, teacher=models.build_dsnet(32))
        distiller.compile(optimizer=runs.optimizer(1e-3, True), metrics=[keras.metrics.CategoricalAccuracy()])
    assert keras.config.dtype_policy().name == "float32"
    assert student.layers[2].compute_dtype == "float16" and student.layers[2].variable_dtype == "float32"
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    history = distiller.fit(images, labels, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_notebook_parameters_choose_the_profile_and_override_seeds(monkeypatch, capsys):
    monkeypatch.setenv("KD_PROFILE", "smoke")
    profile = notebook.notebook_profile("auto", "10, 12", True)
    assert profile.name == "smoke" and profile.seeds == (10, 12) and profile.mixed_precision is True
    assert "profile smoke: set by KD_PROFILE" in capsys.readouterr().out
    assert notebook.notebook_profile("cpu").seeds == config.get_profile("cpu").seeds
    with pytest.raises(ValueError, match="Unknown profile 'bogus'"):
        notebook.notebook_profile("bogus")


def test_a_later_notebook_alone_makes_the_choice_it_needs(tiny, artifacts, capsys):
    """settings_for runs notebook 04's sweep when no choice exists for this teacher,
    and a choice made for another teacher does not count."""
    profile, manifest, teacher = tiny
    profile = profile.replace(temperatures=(3.0, 10.0), alphas=(0.1, 0.5), seeds=(1,), student_epochs=1)
    chosen = choices.settings_for(profile, manifest, teacher)
    out = capsys.readouterr().out
    assert "running the sweep of notebook 04 now" in out
    assert chosen["temperature"] in (3.0, 10.0) and chosen["alpha"] in (0.1, 0.5) and chosen["scale_by_t2"] in (0, 1)
    # two loss forms x two temperatures, then two alphas (one of them a run of the T sweep, loaded):
    # one progress line per run
    assert out.count("test acc") == 6 and "[4/4]" in out and "[2/2]" in out and "run(s) left" in out
    assert choices.settings_for(profile, manifest, teacher) == chosen  # saved: no sweep the second time
    assert "running the sweep" not in capsys.readouterr().out
    keras.utils.set_random_seed(5)
    other = models.build_dsnet(32)
    with pytest.raises(pipeline.MissingStepError, match="another teacher"):
        choices.chosen_settings(profile, manifest, other)


def test_the_loss_form_and_temperature_are_chosen_together_on_validation(monkeypatch, artifacts):
    """Notebook 04 sweeps T with equation (5) and with T^2, takes the (form, T) of
    best mean validation accuracy, then alpha at that setting; the test split plays no part."""
    profile = config.get_profile("smoke", temperatures=(3.0, 10.0), alphas=(0.1, 0.5))
    val = {(False, 3.0): 0.70, (False, 10.0): 0.72, (True, 3.0): 0.71, (True, 10.0): 0.80}
    calls = []

    def fake_sweep(profile, manifest, teacher, *, temperatures=None, alphas=None, temperature=None,
                   scale_by_t2=False, **_):
        calls.append((temperatures, alphas, temperature, scale_by_t2))
        if temperatures:
            return {t: [{"best_val_accuracy": val[(scale_by_t2, t)], "test": {"accuracy": 1 - val[(scale_by_t2, t)]}}]
                    for t in temperatures}
        return {a: [{"best_val_accuracy": 0.6 + a, "test": {"accuracy": 0.0}}] for a in alphas}

    monkeypatch.setattr(choices, "sweep", fake_sweep)
    manifest = types.SimpleNamespace(content_hash="m" * 64)
    teacher = types.SimpleNamespace(kd_run_key="t" * 16)
    choice = choices.choose_settings(profile, manifest, teacher)
    assert (choice["scale_by_t2"], choice["temperature"], choice["alpha"]) == (True, 10.0, 0.5)
    assert list(choice["by_temperature"]) == ["paper eq. (5)", "eq. (5) with T^2"]
    assert calls[-1] == (None, (0.1, 0.5), 10.0, True)  # alpha at the chosen form and T
    assert choices.chosen_settings(profile, manifest, teacher) == {"temperature": 10.0, "alpha": 0.5,
                                                                    "scale_by_t2": True}
    assert choices.describe_settings(choice) == "T = 10, alpha = 0.5, eq. (5) with T^2"


def test_at_temperature_one_both_loss_forms_are_one_run():
    profile = config.get_profile("smoke")
    plain = runs.student_run(profile, "m" * 64, "t" * 16, temperature=1.0, alpha=0.1)
    scaled = runs.student_run(profile, "m" * 64, "t" * 16, temperature=1.0, alpha=0.1, scale_by_t2=True)
    assert plain[0] == scaled[0] and scaled[2]["scale_by_t2"] is False
    at_ten = runs.student_run(profile, "m" * 64, "t" * 16, temperature=10.0, alpha=0.1, scale_by_t2=True)
    assert at_ten[0] != runs.student_run(profile, "m" * 64, "t" * 16, temperature=10.0, alpha=0.1)[0]


def test_a_teacher_at_a_larger_size_trains_and_teaches_a_smaller_student(tiny_manifest, artifacts):
    """The teacher is trained, scored and asked for logits at its own size
    (augmented in training); the student learns at its size from those logits."""
    profile = config.get_profile("smoke", image_size=32, teacher_image_size=48, teacher_augment=True,
                                 batch_size=32, seeds=(1,), student_epochs=1)
    teacher, record = pipeline.train_teacher(profile, tiny_manifest, verbose=0)
    assert teacher.input_shape[1:3] == (48, 48) and record["config"]["image_size"] == 48
    assert record["config"]["augment"].startswith("dihedral")
    logits = pipeline.teacher_logits(profile, tiny_manifest, teacher, "test")
    images = np.stack([keras.ops.convert_to_numpy(pipeline.batches.load_image(p, 48))
                       for p in tiny_manifest.split("test").path])
    assert np.allclose(logits, teacher.predict(images, verbose=0), atol=1e-4)
    student, srecord = pipeline.distill_student(profile, tiny_manifest, teacher, seed=1, verbose=0)
    assert student.input_shape[1:3] == (32, 32)
    assert 0.0 <= srecord["test"]["fidelity"]["agreement"] <= 1.0
    again, _ = pipeline.train_teacher(profile, tiny_manifest, verbose=0)  # found, not retrained
    assert again.input_shape[1:3] == (48, 48)


def test_robust_views_and_colour_constancy_are_part_of_the_runs_and_their_keys(tiny_manifest, artifacts):
    """Off (every profile today), runs keep the keys they had; on, the teacher
    and the students train on robust views with Shades of Gray inside the
    model, a student can be trained without the views under a key of its own
    (a robust teacher into a plain student), and the teacher's logits are
    those of the images as they are."""
    plain = config.get_profile("smoke", image_size=32, batch_size=32, seeds=(1,), student_epochs=1)
    assert runs.view_config(None, plain) == {}
    assert "augment" not in runs.student_run(plain, "m", "t")[2]
    profile = plain.replace(robust_teacher=True, robust_students=True, color_constancy=True)
    teacher_config = runs.teacher_run(profile, "m")[2]
    assert teacher_config["augment"] == runs.ROBUST_AUGMENT
    assert teacher_config["color_constancy"] == runs.COLOR_CONSTANCY
    assert runs.teacher_run(profile, "m")[0] != runs.teacher_run(plain, "m")[0]
    assert teacher_config["views"]["vignette_floor"] == list(pipeline.batches.ROBUST["vignette_floor"])
    keys = runs.teacher_run(profile, "m")[0], runs.student_run(profile, "m", "t")[0]
    with pytest.MonkeyPatch.context() as patch:  # other views, other keys: no run of the old views is reused
        patch.setitem(pipeline.batches.ROBUST, "vignette_floor", (0.1, 0.6))
        other = runs.teacher_run(profile, "m")[0], runs.student_run(profile, "m", "t")[0]
    assert other[0] != keys[0] and other[1] != keys[1]
    teacher, record = pipeline.train_teacher(profile, tiny_manifest, verbose=0)
    assert teacher.get_layer("shades_of_gray") and record["config"]["augment"] == runs.ROBUST_AUGMENT
    images = np.stack([keras.ops.convert_to_numpy(pipeline.batches.load_image(p, 32))
                       for p in tiny_manifest.split("val").path])
    assert np.allclose(pipeline.teacher_logits(profile, tiny_manifest, teacher, "val"),
                       teacher.predict(images, verbose=0), atol=1e-4)
    student, robust = pipeline.distill_student(profile, tiny_manifest, teacher, verbose=0)
    _, without = pipeline.distill_student(profile, tiny_manifest, teacher, robust=False, verbose=0)
    assert student.get_layer("shades_of_gray") and robust["config"]["augment"] == runs.ROBUST_AUGMENT
    assert "augment" not in without["config"] and without["key"] != robust["key"]
    assert without["config"]["color_constancy"] == runs.COLOR_CONSTANCY
    # The students' averaged weights (a distilled student's optimizer keeps them): validated and kept.
    averaged, record = pipeline.distill_student(profile.replace(student_weight_average=0.9), tiny_manifest, teacher,
                                                verbose=0)
    assert record["config"]["weight_average"] == 0.9 and record["key"] != robust["key"]
    kept = keras.saving.load_model(Path(record["run_dir"]) / "best.keras", compile=False)
    for ours, file in zip(averaged.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(ours, file)


def test_notebook_06_compares_the_plain_students_of_a_robust_teacher(monkeypatch):
    """With a robust teacher and robust students, DSNet trained without the
    views is added, distilled, on the two controls' soft targets and without a
    teacher; otherwise the groups are the usual ones."""
    calls = []
    monkeypatch.setattr(pipeline, "repeat", lambda p, m, t, student="DSNet", **options:
                        calls.append((student, options)) or [{"student": student, **options}])
    chosen = {"temperature": 1.0, "alpha": 0.1, "scale_by_t2": False}
    plain = config.get_profile("kaggle-cpu")
    groups = choices.compared_models(plain, None, None, {"teacher": True}, chosen)
    assert list(groups) == ["Teacher ResNet50", "DSNet distilled", "DSNet without teacher", "MobileNet distilled",
                            "MobileNet without teacher", "EfficientNetB0 distilled", "EfficientNetB0 without teacher"]
    assert not any("robust" in options for _, options in calls)
    calls.clear()
    groups = choices.compared_models(config.get_profile("kaggle-cpu-robust"), None, None, {}, chosen)
    assert groups["DSNet distilled, trained without the views"] == [{"student": "DSNet", "robust": False, **chosen}]
    for control in ("uniform", "shuffled"):
        assert groups[f"DSNet, {control} teacher, trained without the views"] == [
            {"student": "DSNet", "robust": False, "teacher_control": control, **chosen}]
    assert groups["DSNet without teacher, trained without the views"] == [
        {"student": "DSNet", "alpha": 1.0, "robust": False}]
    assert sum("robust" in options for _, options in calls) == 4
