import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kd_utils import batches, storage, training
from kd_utils.distillation import Distiller


def separable_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None] * 2.0
    return tf.data.Dataset.from_tensor_slices((x, np.eye(2, dtype=np.float32)[y])).batch(16)


def shuffled_epochs(n=80, seed=0):
    """Training data reshuffled every epoch from (seed, epoch), as the pipelines make it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None] * 1.0
    examples = tf.data.Dataset.from_tensor_slices((x, np.eye(2, dtype=np.float32)[y]))
    return batches.EpochDataset(examples, n, seed, lambda ds: ds.batch(16))


def small_classifier(seed=0, dropout=0.0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((4,)), keras.layers.Dense(8, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    model = keras.Sequential([*layers, keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy()],
    )
    return model


class Crash(keras.callbacks.Callback):
    """A disconnect at the end of epoch ``at`` (0-based), before its state is saved."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("disconnected")


def test_fit_restores_the_best_validation_epoch_and_logs(tmp_path):
    model = small_classifier()
    info = training.fit(model, separable_data(), separable_data(seed=1), epochs=4, run_dir=tmp_path, verbose=0)
    accs = info["history"]["val_categorical_accuracy"]
    assert len(accs) == 4
    assert info["best_epoch"] == int(np.argmax(accs)) + 1
    assert info["best_val_accuracy"] == pytest.approx(max(accs))
    assert len(info["epoch_seconds"]) == 4 and info["train_seconds"] == pytest.approx(sum(info["epoch_seconds"]))
    best = keras.saving.load_model(tmp_path / "best.keras")
    for a, b in zip(best.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len((tmp_path / "history.csv").read_text().strip().splitlines()) == 5


class ForcedValAccuracy(keras.callbacks.Callback):
    """Sets each epoch's validation accuracy (before Keras' History records it)."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights = values, []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_categorical_accuracy"] = self.values[epoch]
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("val_accuracy", [(0.9, 0.5), (0.5, 0.9)])
def test_the_model_ends_with_the_best_epochs_weights_reloaded_only_when_needed(tmp_path, monkeypatch, val_accuracy):
    loads = []
    real_load = keras.saving.load_model
    monkeypatch.setattr(training.keras.saving, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    model, forced = small_classifier(), ForcedValAccuracy(val_accuracy)
    info = training.fit(model, separable_data(), separable_data(seed=1), epochs=2, run_dir=tmp_path, verbose=0,
                        callbacks=[forced])
    best = int(np.argmax(val_accuracy))
    assert info["best_epoch"] == best + 1
    # Last epoch best: its weights are already in the model, nothing is rebuilt from a file.
    assert len(loads) == (0 if best == 1 else 1)
    saved = real_load(tmp_path / "best.keras").get_weights()
    for ours, file, at_best in zip(model.get_weights(), saved, forced.weights[best]):
        np.testing.assert_array_equal(ours, at_best)
        np.testing.assert_array_equal(file, at_best)
    assert any(not np.array_equal(a, b) for a, b in zip(forced.weights[0], forced.weights[1]))


def test_fit_of_a_distiller_checkpoints_only_the_student(tmp_path):
    teacher = small_classifier(1)
    student = small_classifier(2)
    d = Distiller(student=student, teacher=teacher)
    d.compile(optimizer=keras.optimizers.Adam(0.05), metrics=[keras.metrics.CategoricalAccuracy()])
    with pytest.raises(RuntimeError, match="disconnected"):  # cut in epoch 3: epoch 2's state is there
        training.fit(d, separable_data(), separable_data(seed=1), epochs=3, run_dir=tmp_path, verbose=0,
                     callbacks=[Crash(2)])
    (state,) = (tmp_path / "state").glob("state-*.npz")
    with np.load(state) as arrays:  # the student's and the optimizer's variables, no teacher
        assert state.name == "state-2.npz"
        assert len(arrays.files) == len(student.variables) + len(d.optimizer.variables)
    info = training.fit(d, separable_data(), separable_data(seed=1), epochs=3, run_dir=tmp_path, verbose=0)
    saved = keras.saving.load_model(tmp_path / "best.keras", compile=False)
    assert len(saved.get_weights()) == len(student.get_weights())
    assert {"loss", "student_loss", "distillation_loss", "val_loss"} <= set(info["history"])


def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path):
    """Killed after epoch 2 and resumed in a new model: same weights, history, best epoch."""
    whole = small_classifier(0, dropout=0.3)
    expected = training.fit(whole, shuffled_epochs(), separable_data(seed=1), 5, tmp_path / "whole", seed=3, verbose=0)

    with pytest.raises(RuntimeError, match="disconnected"):
        training.fit(small_classifier(0, dropout=0.3), shuffled_epochs(), separable_data(seed=1), 5,
                     tmp_path / "cut", seed=3, verbose=0, callbacks=[Crash(2)])
    assert len(json.loads((tmp_path / "cut" / "state" / "progress.json").read_text())["history"]) == 2
    resumed_model = small_classifier(7, dropout=0.3)  # other initial weights: the state must replace them
    resumed = training.fit(resumed_model, shuffled_epochs(), separable_data(seed=1), 5, tmp_path / "cut", seed=3,
                           verbose=0)
    for a, b in zip(whole.get_weights(), resumed_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed["history"] == expected["history"]
    assert resumed["best_epoch"] == expected["best_epoch"] and len(resumed["epoch_seconds"]) == 5
    assert (tmp_path / "cut" / "history.csv").read_text().count("\n") == 6  # header + 5 epochs, none twice


@pytest.mark.parametrize("during", ["epoch 2 state", "final best.keras"])
def test_a_kill_during_a_save_loses_at_most_that_epoch(tmp_path, monkeypatch, during):
    whole = small_classifier(0)
    expected = training.fit(whole, shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "whole", verbose=0)

    name, real = ("savez", np.savez) if during == "epoch 2 state" else ("copyfile", training.shutil.copyfile)
    calls = []

    def killed(target, *args, **kwargs):
        calls.append(target)
        if len(calls) == (2 if name == "savez" else 1):  # a few bytes written, then the kill
            (target.write(b"PK\x03\x04") if hasattr(target, "write") else open(args[0], "wb").write(b"PK"))
            raise KeyboardInterrupt
        return real(target, *args, **kwargs)

    monkeypatch.setattr(training.np if name == "savez" else training.shutil, name, killed)
    run = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 4, run, verbose=0)
    monkeypatch.undo()
    assert not list(run.rglob(".*.tmp-*")) and not (run / "best.keras").exists()
    done = len(json.loads((run / "state" / "progress.json").read_text())["history"])
    assert done == (1 if name == "savez" else 4)
    model = small_classifier(0)
    info = training.fit(model, shuffled_epochs(), separable_data(seed=1), 4, run, verbose=0)
    assert info["history"] == expected["history"] and info["best_epoch"] == expected["best_epoch"]
    for a, b in zip(whole.get_weights(), keras.saving.load_model(run / "best.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncated state npz", "truncated best-epoch model", "garbage progress file",
                                    "state npz rewritten whole"])
def test_damaged_saved_state_is_never_used_and_the_run_starts_again(tmp_path, capsys, damage):
    """Cut after epoch 2 of 4, one state file damaged: one line, then a fresh run
    that ends exactly as an uninterrupted one - never a traceback, on any rerun."""
    expected = training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "whole",
                            seed=3, verbose=0)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="disconnected"):
        training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 4, run, seed=3, verbose=0,
                     callbacks=[Crash(2)])
    state = run / "state"
    progress = json.loads((state / "progress.json").read_text())
    assert sorted(progress["sha256"]) == sorted([progress["best_file"], "state-2.npz"])
    if damage == "truncated state npz":
        _truncate(state / "state-2.npz")
    elif damage == "truncated best-epoch model":
        _truncate(state / progress["best_file"])
    elif damage == "garbage progress file":
        (state / "progress.json").write_bytes(b"\x00\xff{]garbage")
    else:  # a valid npz of other numbers: only the checksum can tell
        with np.load(state / "state-2.npz") as saved:
            arrays = {k: saved[k] + 1 for k in saved.files}
        np.savez(state / "state-2.npz", **arrays)
    capsys.readouterr()
    model = small_classifier(0)
    info = training.fit(model, shuffled_epochs(), separable_data(seed=1), 4, run, seed=3, verbose=0)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "cannot be used" in notes[0] and "starts again from its first epoch" in notes[0]
    assert info["history"] == expected["history"] and info["best_epoch"] == expected["best_epoch"]


def test_a_state_checksum_mismatch_names_the_file(tmp_path, capsys):
    with pytest.raises(RuntimeError):
        training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 3, tmp_path, verbose=0,
                     callbacks=[Crash(1)])
    _truncate(tmp_path / "state" / "state-1.npz")
    training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 3, tmp_path, verbose=0)
    assert "state-1.npz does not match its checksum" in capsys.readouterr().out


class DeleteLock(keras.callbacks.Callback):
    """Another process (or a person) deletes the run's lock during epoch ``at``."""

    def __init__(self, path, at):
        super().__init__()
        self.path, self.at = path, at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            self.path.unlink()


def test_training_stops_before_saving_an_epoch_when_its_lock_is_lost(tmp_path):
    lock = storage.RunLock(tmp_path).acquire()
    with pytest.raises(storage.RunLockedError, match="nobody"):
        training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 4, tmp_path, verbose=0,
                     lock=lock, callbacks=[DeleteLock(lock.path, 1)])
    progress = json.loads((tmp_path / "state" / "progress.json").read_text())
    assert len(progress["history"]) == 1  # epoch 2 finished after the lock was gone: nothing of it was written
    assert (tmp_path / "history.csv").read_text().count("\n") == 2


class CountStarts(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.starts = 0

    def on_train_begin(self, logs=None):
        self.starts += 1


def test_one_model_fit_per_run_so_stateful_callbacks_work(tmp_path):
    """EarlyStopping counts its patience across epochs (it would reset every
    epoch with a fit per epoch), and a run it stopped is finished: asked again
    it trains nothing more."""
    starts = CountStarts()
    forced = ForcedValAccuracy([0.6, 0.8, 0.7, 0.7, 0.9, 0.9])  # no gain for 2 epochs after epoch 2
    stop = keras.callbacks.EarlyStopping(monitor="val_categorical_accuracy", patience=2)
    info = training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 6, tmp_path, verbose=0,
                        callbacks=[starts, forced, stop])
    assert starts.starts == 1
    assert len(info["epoch_seconds"]) == 4 and info["best_epoch"] == 2
    again = small_classifier(3)
    repeat = training.fit(again, shuffled_epochs(), separable_data(seed=1), 6, tmp_path, verbose=0,
                          callbacks=[CountStarts()])
    assert repeat["epoch_seconds"] == info["epoch_seconds"] and repeat["best_epoch"] == 2
    best = keras.saving.load_model(tmp_path / "best.keras")
    for a, b in zip(again.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_patience_stops_a_resumed_run_where_an_uninterrupted_one_stops(tmp_path):
    """No better validation accuracy for ``patience`` epochs ends the run, its
    best epoch kept. The decision comes from the saved history, so a run cut
    short after epoch 2 and resumed stops after epoch 4 as the whole run does
    (EarlyStopping's own count would start again at the resume)."""
    values = [0.6, 0.8, 0.7, 0.7, 0.9, 0.9]  # no gain for 2 epochs after epoch 2

    def run(folder, *extra):
        return training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 6, tmp_path / folder,
                            seed=3, verbose=0, callbacks=[ForcedValAccuracy(values), *extra], patience=2)

    whole = run("whole")
    assert len(whole["epoch_seconds"]) == 4 and whole["best_epoch"] == 2
    # Stopped: nothing is left to resume, only the best epoch's model is kept.
    assert sorted(p.name for p in (tmp_path / "whole" / "state").iterdir()) == ["best-e2.keras", "progress.json"]
    assert run("whole")["epoch_seconds"] == whole["epoch_seconds"]  # asked again, it trains nothing
    with pytest.raises(RuntimeError, match="disconnected"):
        run("cut", Crash(2))
    resumed = run("cut")
    assert resumed["history"] == whole["history"] and len(resumed["epoch_seconds"]) == 4
    with pytest.raises(ValueError, match="patience must be None or a whole number of at least 1, got 0"):
        training.fit(small_classifier(0), separable_data(), separable_data(seed=1), 3, tmp_path / "bad", patience=0)


def test_a_learning_rate_lowered_by_a_callback_is_saved_with_the_state(tmp_path):
    """The state callback runs after the user's: a resume continues at the lowered rate."""
    lower = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: model.optimizer.learning_rate.assign(0.05 / (epoch + 2)))
    model = small_classifier(0)
    whole = training.fit(model, shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "whole", seed=3,
                         verbose=0, callbacks=[lower])
    model = small_classifier(0)
    with pytest.raises(RuntimeError, match="disconnected"):
        training.fit(model, shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "cut", seed=3, verbose=0,
                     callbacks=[lower, Crash(2)])
    model = small_classifier(0)
    resumed = training.fit(model, shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "cut", seed=3,
                           verbose=0, callbacks=[lower])
    assert resumed["history"] == whole["history"]


def test_a_finished_but_unrecorded_run_is_not_trained_twice(tmp_path):
    model = small_classifier()
    first = training.fit(model, separable_data(), separable_data(seed=1), 3, tmp_path, verbose=0)
    # After the last epoch only the best model and the progress are kept: nothing is left to resume.
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [f"best-e{first['best_epoch']}.keras",
                                                                      "progress.json"]
    # The process died before the record was written: the next call finds every epoch done.
    other = small_classifier(5)
    again = training.fit(other, separable_data(), separable_data(seed=1), 3, tmp_path, verbose=0)
    assert again["epoch_seconds"] == first["epoch_seconds"] and again["history"] == first["history"]
    assert (tmp_path / "history.csv").read_text().count("\n") == 4
    for a, b in zip(model.get_weights(), other.get_weights()):  # the best epoch's weights, from its file
        np.testing.assert_array_equal(a, b)


def test_a_finished_run_asked_for_more_epochs_starts_again(tmp_path, capsys):
    """Its last epoch left no state to go on from: it is trained again from the start, with a notice."""
    fresh = training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 3, tmp_path / "fresh",
                         seed=3, verbose=0)
    training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 2, tmp_path / "run", seed=3,
                 verbose=0)
    more = training.fit(small_classifier(0), shuffled_epochs(), separable_data(seed=1), 3, tmp_path / "run",
                        seed=3, verbose=0)
    assert "holds no state to resume epoch 3 from" in capsys.readouterr().out
    assert more["history"] == fresh["history"] and len(more["epoch_seconds"]) == 3


def test_records_are_reused_only_with_their_key_and_model(tmp_path, capsys):
    training.fit(small_classifier(), separable_data(), separable_data(seed=1), 1, tmp_path, verbose=0)
    assert training.load_finished(tmp_path, "abc") is None
    training.save_record(tmp_path, {"test": {"accuracy": np.float32(0.9)}}, "abc")
    assert not (tmp_path / "state").exists()  # not needed once the record is there
    assert training.load_finished(tmp_path, "abc")["test"]["accuracy"] == pytest.approx(0.9)
    assert training.load_finished(tmp_path, "xyz") is None
    assert "belongs to run key 'abc'" in capsys.readouterr().out
    assert (tmp_path / "record.json.damaged").is_file() and not (tmp_path / "record.json").exists()


@pytest.mark.parametrize("damage", ["truncated record", "changed model", "missing model"])
def test_a_damaged_run_is_reported_in_one_line_and_not_trusted(tmp_path, capsys, damage):
    training.fit(small_classifier(), separable_data(), separable_data(seed=1), 1, tmp_path, verbose=0)
    training.save_record(tmp_path, {"test": {"accuracy": 0.9}}, "abc")
    record, best = tmp_path / "record.json", tmp_path / "best.keras"
    if damage == "truncated record":
        record.write_text(record.read_text()[:40])
    elif damage == "changed model":
        best.write_bytes(best.read_bytes()[:100])
    else:
        best.unlink()
    assert training.load_finished(tmp_path, "abc") is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("note: ") and "trained again" in out[0]


def test_epochs_below_one_are_refused(tmp_path):
    for epochs in (0, -1):
        with pytest.raises(ValueError, match="epochs must be at least 1"):
            training.fit(small_classifier(), separable_data(), separable_data(), epochs, tmp_path, verbose=0)


def test_a_missing_validation_metric_is_explained(tmp_path):
    with pytest.raises(KeyError, match="pass validation_data"):
        training.fit(small_classifier(), separable_data(), None, 1, tmp_path, verbose=0)


def test_a_killed_atomic_write_leaves_the_old_file(tmp_path):
    target = storage.write_json(tmp_path / "record.json", {"a": 1})

    def dies(tmp):
        with open(tmp, "w") as f:
            f.write('{"a": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storage.atomic_write(target, dies)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_run_keys_depend_on_content_not_order():
    a = {"config": {"epochs": 5, "lr": 1e-3}, "teacher": "t1", "manifest": "m1"}
    assert training.run_key(a) == training.run_key(dict(reversed(list(a.items()))))
    assert training.run_key(a) != training.run_key({**a, "teacher": "t2"})
    assert training.run_key(a) != training.run_key({**a, "manifest": "m2"})
    assert len(training.run_key(a)) == 16


@pytest.mark.parametrize("kind", ["classifier", "distiller"])
def test_no_variable_is_created_inside_a_traced_step(tmp_path, monkeypatch, kind):
    """The optimizer is built before the first step: TensorFlow traces a step that
    creates variables twice, and for a large backbone a trace is most of a short run."""
    from keras.src.backend.common import variables as keras_variables

    created_in_trace = []
    init = keras_variables.Variable.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if tf.inside_function():
            created_in_trace.append(self.path)

    monkeypatch.setattr(keras_variables.Variable, "__init__", recording_init)
    model = small_classifier()
    if kind == "distiller":
        model = Distiller(student=model, teacher=small_classifier(seed=1))
        model.compile(optimizer=keras.optimizers.Adam(0.05), metrics=[keras.metrics.CategoricalAccuracy()])
    training.fit(model, separable_data(), separable_data(seed=1), epochs=1, run_dir=tmp_path, verbose=0)
    assert created_in_trace == []
    assert len(model.optimizer.variables) == 2 + 2 * len(training._target(model).trainable_variables)


def averaging_classifier(seed=0, momentum=0.9):
    model = small_classifier(seed, dropout=0.3)
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=momentum),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy()])
    return model


class RawWeights(keras.callbacks.Callback):
    """The trained (raw) weights after every update."""

    def __init__(self):
        super().__init__()
        self.after_each_step = []

    def on_train_batch_end(self, batch, logs=None):
        self.after_each_step.append([np.asarray(v, np.float64) for v in self.model.trainable_variables])


def test_averaged_weights_are_validated_and_kept_while_the_raw_ones_train(tmp_path):
    """Adam's use_ema: the model kept (best epoch 2 of 2) holds the running
    average of every update's weights, computed here by hand; training goes
    on from the raw weights after epoch 1's validation."""
    model, raw = averaging_classifier(momentum=0.9), RawWeights()
    forced = ForcedValAccuracy((0.5, 0.9))  # epoch 2 is the best
    info = training.fit(model, shuffled_epochs(), separable_data(seed=1), 2, tmp_path, seed=3, verbose=0,
                        callbacks=[raw, forced])
    assert info["best_epoch"] == 2 and len(raw.after_each_step) == 10  # 5 batches an epoch
    average = raw.after_each_step[0]  # Keras: the first update's weights, then 0.9 * average + 0.1 * weights
    for step in raw.after_each_step[1:]:
        average = [0.9 * a + 0.1 * w for a, w in zip(average, step)]
    kept = keras.saving.load_model(tmp_path / "best.keras")
    assert len(kept.trainable_variables) == len(average)
    for ours, by_hand, last in zip(model.trainable_variables, average, raw.after_each_step[-1]):
        np.testing.assert_allclose(np.asarray(ours), by_hand, rtol=1e-5, atol=1e-6)
        assert not np.allclose(by_hand, last, rtol=1e-3)  # the average, not the last raw weights
    for ours, file in zip(model.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(ours, file)


def test_the_averaged_weights_are_the_ones_validated(tmp_path):
    model = averaging_classifier(momentum=0.5)
    info = training.fit(model, shuffled_epochs(), separable_data(seed=1), 1, tmp_path, seed=3, verbose=0)
    loss, accuracy = model.evaluate(separable_data(seed=1), verbose=0)
    assert info["history"]["val_loss"][0] == pytest.approx(loss, rel=1e-6)
    assert info["best_val_accuracy"] == pytest.approx(accuracy)


def test_a_resumed_run_with_averaged_weights_equals_the_uninterrupted_run(tmp_path):
    """The saved state holds the average in the model (saved after validation):
    the resume puts the raw weights back to train on, bit for bit."""
    whole = averaging_classifier(0)
    expected = training.fit(whole, shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "whole", seed=3,
                            verbose=0)
    with pytest.raises(RuntimeError, match="disconnected"):
        training.fit(averaging_classifier(0), shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "cut",
                     seed=3, verbose=0, callbacks=[Crash(2)])
    resumed_model = averaging_classifier(7)
    resumed = training.fit(resumed_model, shuffled_epochs(), separable_data(seed=1), 4, tmp_path / "cut", seed=3,
                           verbose=0)
    assert resumed["history"] == expected["history"] and resumed["best_epoch"] == expected["best_epoch"]
    for a, b in zip(whole.get_weights(), resumed_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_refuses_a_second_swap_of_the_averaged_weights(tmp_path):
    with pytest.raises(ValueError, match="pass no SwapEMAWeights"):
        training.fit(averaging_classifier(), separable_data(), separable_data(seed=1), 1, tmp_path, verbose=0,
                     callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True)])


def test_averaged_weights_under_float16_and_loss_scaling_are_the_ones_kept(tmp_path):
    """``colab-robust`` on a GPU: a mixed_float16 model whose Adam keeps the
    average sits inside a LossScaleOptimizer; the average is still what is
    validated and kept, the raw weights what trains."""
    from kd_utils.experiments import runs

    with runs.build_scope(None, mixed_precision=True):
        model = small_classifier(0, dropout=0.3)
    model.compile(optimizer=runs.optimizer(0.05, True, weight_average=0.9),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy()])
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.layers[-1].compute_dtype == "float16" and model.layers[-1].variable_dtype == "float32"
    raw, forced = RawWeights(), ForcedValAccuracy((0.5, 0.9))
    info = training.fit(model, shuffled_epochs(), separable_data(seed=1), 2, tmp_path, seed=3, verbose=0,
                        callbacks=[raw, forced])
    assert info["best_epoch"] == 2
    average = raw.after_each_step[0]
    for step in raw.after_each_step[1:]:
        average = [0.9 * a + 0.1 * w for a, w in zip(average, step)]
    for ours, by_hand, last in zip(model.trainable_variables, average, raw.after_each_step[-1]):
        np.testing.assert_allclose(np.asarray(ours), by_hand, rtol=1e-4, atol=1e-5)
        assert not np.allclose(by_hand, last, rtol=1e-3)
    kept = keras.saving.load_model(tmp_path / "best.keras")
    for ours, file in zip(model.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(ours, file)
