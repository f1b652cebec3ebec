import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kd_utils import training
from kd_utils.distillation import Distiller


def separable_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None] * 2.0
    return tf.data.Dataset.from_tensor_slices((x, np.eye(2, dtype=np.float32)[y])).batch(16)


def small_classifier(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy()],
    )
    return model


def test_fit_restores_the_best_validation_epoch_and_logs(tmp_path):
    model = small_classifier()
    info = training.fit(model, separable_data(), separable_data(seed=1), epochs=4, run_dir=tmp_path, verbose=0)
    accs = info["history"]["val_categorical_accuracy"]
    assert info["best_epoch"] == int(np.argmax(accs)) + 1
    assert info["best_val_accuracy"] == pytest.approx(max(accs))
    assert len(info["epoch_seconds"]) == 4 and info["train_seconds"] > 0
    best = keras.saving.load_model(tmp_path / "best.keras")
    for a, b in zip(best.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len((tmp_path / "history.csv").read_text().strip().splitlines()) == 5
    assert not (tmp_path / "backup").exists()  # removed once training finished


def test_fit_of_a_distiller_saves_only_the_student(tmp_path):
    teacher = small_classifier(1)
    student = small_classifier(2)
    d = Distiller(student=student, teacher=teacher)
    d.compile(optimizer=keras.optimizers.Adam(0.05), metrics=[keras.metrics.CategoricalAccuracy()])
    info = training.fit(d, separable_data(), separable_data(seed=1), epochs=2, run_dir=tmp_path, verbose=0)
    saved = keras.saving.load_model(tmp_path / "best.keras", compile=False)
    assert len(saved.get_weights()) == len(student.get_weights())
    assert {"loss", "student_loss", "distillation_loss", "val_loss"} <= set(info["history"])


def test_an_interrupted_fit_resumes_from_its_backup(tmp_path):
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("disconnected")

    model = small_classifier()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="disconnected"):
        model.fit(separable_data(), epochs=4, callbacks=[backup, Crash()], verbose=0)
    resumed = small_classifier()
    history = resumed.fit(separable_data(), epochs=4, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))], verbose=0)
    assert len(history.history["loss"]) == 2  # epochs 0 and 1 were backed up; only 2 and 3 run again


def test_records_are_reused_only_for_the_same_configuration(tmp_path):
    cfg = {"model": "DSNet", "temperature": 10.0, "epochs": 20}
    assert training.load_or_prepare(tmp_path, cfg) is None
    training.save_record(tmp_path, {"config": cfg, "test": {"accuracy": np.float32(0.9)}})
    assert training.load_or_prepare(tmp_path, dict(reversed(list(cfg.items()))))["test"]["accuracy"] == pytest.approx(0.9)
    assert json.loads((tmp_path / "record.json").read_text())["config"] == cfg
    assert training.load_or_prepare(tmp_path, {**cfg, "temperature": 3.0}) is None
    assert not (tmp_path / "record.json").exists()  # the folder now belongs to the new configuration


def test_best_checkpoint_explains_a_missing_metric(tmp_path):
    model = small_classifier()
    with pytest.raises(KeyError, match="pass validation_data"):
        model.fit(separable_data(), epochs=1, callbacks=[training.BestCheckpoint(tmp_path / "b.keras")], verbose=0)


def test_fit_resumed_after_a_disconnect_keeps_every_epoch_and_the_best(tmp_path):
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("disconnected")

    cfg = {"model": "small", "epochs": 5}
    assert training.load_or_prepare(tmp_path, cfg) is None
    model = small_classifier()
    model.fit = _with_extra_callback(model.fit, Crash())
    with pytest.raises(RuntimeError, match="disconnected"):
        training.fit(model, separable_data(), separable_data(seed=1), epochs=5, run_dir=tmp_path, verbose=0)
    logged = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(logged) == 1 + 3  # header + epochs 0-2: the crash came after epoch 2 was logged and backed up
    assert training.load_or_prepare(tmp_path, cfg) is None  # same configuration: the folder is kept
    info = training.fit(small_classifier(), separable_data(), separable_data(seed=1), epochs=5, run_dir=tmp_path, verbose=0)
    assert len(info["epoch_seconds"]) == 5  # 3 before + 2 after the resume
    accs = [float(r.split(",")[header_index(tmp_path, "val_categorical_accuracy")]) for r in
            (tmp_path / "history.csv").read_text().strip().splitlines()[1:]]
    assert info["best_val_accuracy"] == pytest.approx(max(accs))


def test_another_configuration_starts_from_a_clean_folder(tmp_path):
    training.load_or_prepare(tmp_path, {"epochs": 5})
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n")
    assert training.load_or_prepare(tmp_path, {"epochs": 6}) is None
    assert not (tmp_path / "history.csv").exists()


def _with_extra_callback(fit, extra):
    def wrapped(*args, callbacks=(), **kwargs):
        return fit(*args, callbacks=[*callbacks, extra], **kwargs)

    return wrapped


def header_index(run_dir, column):
    return (run_dir / "history.csv").read_text().splitlines()[0].split(",").index(column)
