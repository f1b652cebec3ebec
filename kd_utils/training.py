"""Training runs that survive a kill, resume exactly and are reused only when identical.

A run (the teacher, or one student at one setting and seed) is identified by
its **key** (:func:`run_key`): a hash of everything that decides its result -
its configuration, the key of the teacher run it distils from and the
content hash of the data manifest. Its folder is derived from the key
(:mod:`kd_utils.experiments.pipeline` names it), and holds:

* ``config.json``   - what the key was computed from, for people to read;
* ``lock.json``     - the one process writing the run (:class:`~kd_utils.storage.RunLock`);
* ``state/``        - after every epoch: the best model so far
  (``best-e<epoch>.keras``), ``progress.json`` (history, epoch times, best
  epoch, micro-batches when the batch did not fit, see :mod:`kd_utils.experiments.memory`,
  and the sha256 of the state files, checked before a resume uses them)
  and, except after the last epoch (nothing is left to resume then), the
  trained model's variables and the optimizer's (``state-<epoch>.npz``).
  A Distiller's state holds the student only, never the teacher;
* ``history.csv``   - one line per finished epoch, a copy of the progress;
* ``tensorboard/``  - TensorBoard logs (profile switch ``tensorboard``);
* ``best.keras``    - the (student) model of the best validation epoch;
* ``record.json``   - written last, with the run key and the sha256 of
  ``best.keras`` and of every other file of the run. A run is finished only
  when its record is there, parses, has the expected key and ``best.keras``'s
  checksum matches; another file that does not match is rebuilt
  (:func:`load_finished`).

Every file is written atomically (:mod:`kd_utils.storage`), so a kill loses
at most the epoch in progress. Each epoch starts from seeds derived from the
run's seed and the epoch number, and its batch order is a function of the
same (see :func:`kd_utils.batches.make_dataset`), so a run resumed after epoch
``k`` ends with the same weights and metrics as one never interrupted
(bit-identical on CPU).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from . import storage

MONITOR = "val_categorical_accuracy"
STATE_DIR = "state"
PROGRESS_FILE = "progress.json"
RECORD_FILE = "record.json"
BEST_FILE = "best.keras"


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run: the same whether or not the run was resumed."""
    return (int(seed) * 100_003 + int(epoch) * 7_919) % (2**31 - 1)


def run_key(material: dict) -> str:
    """A short hash of ``material`` (key order does not matter)."""
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _target(model: keras.Model) -> keras.Model:
    """The model worth saving: a Distiller's student, else the model itself."""
    return getattr(model, "student", model)


# --------------------------------------------------------------------------- finished runs


def _checksummed(run_dir: Path) -> dict:
    """sha256 of every file of a run folder but its record and lock (sub-folders are not results)."""
    skip = {RECORD_FILE, RECORD_FILE + ".damaged", storage.RunLock.FILE}
    return {p.name: storage.sha256_file(p) for p in sorted(run_dir.iterdir())
            if p.is_file() and p.name not in skip and not p.name.startswith(".")}


def load_finished(run_dir, key: str) -> dict | None:
    """The record of a finished run with this key, else None.

    A record that is cut short, belongs to another key or whose ``best.keras``
    is missing or changed is reported in one line and set aside
    (``record.json.damaged``): the run is then resumed or trained again. The
    other files the record holds a checksum of (``config.json``,
    ``history.csv``, the test predictions) are checked and rebuilt by whoever
    loads the run's model (:func:`damaged`, :func:`write_history`,
    :func:`rebuilt`).
    """
    run_dir = Path(run_dir)
    path = run_dir / RECORD_FILE
    if not path.is_file():
        return None
    record = storage.read_json(path)
    problem = None
    if not isinstance(record, dict):
        problem = "is damaged (cut short or not JSON)"
    elif record.get("key") != key:
        problem = f"belongs to run key {record.get('key')!r}, not {key!r}"
    elif not (run_dir / BEST_FILE).is_file():
        problem = f"has no {BEST_FILE} beside it"
    elif storage.sha256_file(run_dir / BEST_FILE) != record.get("best_sha256"):
        problem = f"does not match {BEST_FILE} (checksum differs: the model file was changed or cut short)"
    if problem is not None:
        storage.notice(f"{path} {problem}; the run is resumed or trained again.")
        path.replace(path.with_name(RECORD_FILE + ".damaged"))
        return None
    return record


def _last_epoch(progress: dict, epochs: int) -> int:
    """The epoch a run ends after: where a callback stopped it (``stopped_after``), else ``epochs``."""
    return progress.get("stopped_after") or epochs


def write_history(run_dir, record: dict) -> None:
    """``history.csv`` again, from the per-epoch metrics and seconds the record keeps."""
    rows = [{**{k: v[i] for k, v in record["history"].items()}, "epoch_seconds": t}
            for i, t in enumerate(record.get("epoch_seconds") or [])]
    _write_history_csv(Path(run_dir) / "history.csv", rows)


def damaged(run_dir, record: dict) -> list[str]:
    """The files (other than ``best.keras``) that ``record`` holds a checksum of and
    that are missing or differ from it."""
    run_dir = Path(run_dir)
    return [name for name, digest in (record.get("sha256") or {}).items()
            if name != BEST_FILE and not ((run_dir / name).is_file() and storage.sha256_file(run_dir / name) == digest)]


def rebuilt(run_dir, record: dict, name: str) -> dict:
    """The record again, with the checksum of its file ``name`` just rebuilt (written atomically)."""
    run_dir = Path(run_dir)
    record = {**record, "sha256": {**(record.get("sha256") or {}), name: storage.sha256_file(run_dir / name)}}
    storage.write_json(run_dir / RECORD_FILE, record)
    return record


def save_record(run_dir, record: dict, key: str) -> Path:
    """Write the record last, with the key and the checksum of every file of the
    run (``best_sha256`` and ``sha256``); the per-epoch state is no longer
    needed and is removed."""
    run_dir = Path(run_dir)
    record = {**record, "key": key, "best_sha256": storage.sha256_file(run_dir / BEST_FILE),
              "sha256": _checksummed(run_dir)}
    path = storage.write_json(run_dir / RECORD_FILE, record)
    shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
    return path


# --------------------------------------------------------------------------- averaged weights


def _averaging(model):
    """The model's optimizer when it keeps a running average of the weights (``use_ema``), else None."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under a LossScaleOptimizer
    return optimizer if getattr(optimizer, "use_ema", False) else None


def _swap_average(optimizer) -> None:
    """Exchange the trained weights and the optimizer's average of them, by copying."""
    for weight, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        raw = keras.ops.convert_to_numpy(weight)
        weight.assign(average)
        average.assign(raw)


class _ValidateTheAverage(keras.callbacks.Callback):
    """With an averaging optimizer, the averaged weights are in the model from
    each epoch's validation until the next epoch begins: they are validated,
    saved as the best epoch and in the epoch's state; the raw ones train.

    Keras' ``SwapEMAWeights`` does the same, but swaps by adding and
    subtracting, which changes the raw weights' last bits: a resumed run
    would not equal an uninterrupted one. This swap copies."""

    def __init__(self, optimizer):
        super().__init__()
        self.optimizer, self.average_in_model = optimizer, False

    def _swap(self, average_in_model: bool) -> None:
        if self.average_in_model != average_in_model:
            _swap_average(self.optimizer)
            self.average_in_model = average_in_model

    def on_test_begin(self, logs=None):
        self._swap(True)

    def on_epoch_end(self, epoch, logs=None):
        self._swap(True)

    def on_epoch_begin(self, epoch, logs=None):
        self._swap(False)


# --------------------------------------------------------------------------- per-epoch state


def _save_state(model, state_dir: Path, epoch: int) -> str:
    target, optimizer = _target(model), model.optimizer
    arrays = {f"m{i}": np.asarray(v) for i, v in enumerate(target.variables)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    name = f"state-{epoch}.npz"

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    storage.atomic_write(state_dir / name, write)
    return name


def _restore_state(model, path: Path) -> None:
    target, optimizer = _target(model), model.optimizer  # the optimizer is built (fit)
    with np.load(path) as saved:
        model_vars, opt_vars = list(target.variables), list(optimizer.variables)
        if len(saved.files) != len(model_vars) + len(opt_vars):
            raise ValueError(f"{path} holds {len(saved.files)} arrays; this model and optimizer have "
                             f"{len(model_vars) + len(opt_vars)}.")
        for i, v in enumerate(model_vars):
            v.assign(saved[f"m{i}"])
        for i, v in enumerate(opt_vars):
            v.assign(saved[f"o{i}"])


def _verified(state_dir: Path, progress: dict, name: str | None) -> None:
    """Raise ValueError unless ``name`` in ``state_dir`` is there with the checksum saved for it."""
    if name is None:
        return
    path = state_dir / name
    if not path.is_file():
        raise ValueError(f"{name} is missing")
    if storage.sha256_file(path) != progress["sha256"].get(name):
        raise ValueError(f"{name} does not match its checksum (changed or cut short)")


def _load_progress(model, run_dir: Path, epochs: int, batching: dict | None = None) -> dict:
    """The progress of an interrupted run, with its state restored into ``model``;
    a fresh progress when there is none or it cannot be used.

    Nothing is used unverified: every state file must match the checksum that
    ``progress.json`` recorded when it was written, and any failure to restore
    (whatever the exception) is one line and a fresh start, never a traceback."""
    fresh = {"history": [], "best_epoch": None, "best_value": None, "best_file": None, "state_file": None,
             "sha256": {}, "batching": batching, "stopped_after": None}
    state_dir = run_dir / STATE_DIR
    if not state_dir.is_dir():
        return fresh
    storage.remove_temporaries(state_dir)
    progress = storage.read_json(state_dir / PROGRESS_FILE)
    try:
        if not isinstance(progress, dict):
            raise ValueError("progress.json is missing or damaged")
        if not isinstance(progress.get("sha256"), dict):
            raise ValueError("progress.json holds no checksums (written by an older version)")
        if not progress["history"] or len(progress["history"]) > epochs:
            raise ValueError(f"it holds {len(progress['history'])} epochs of {epochs}")
        if progress.get("batching") != batching:
            raise ValueError(f"it was trained with micro-batches {progress.get('batching')}, not {batching}")
        _verified(state_dir, progress, progress["best_file"])
        _verified(state_dir, progress, progress["state_file"])
        if progress["state_file"] is not None:
            _restore_state(model, state_dir / progress["state_file"])
            averaging = _averaging(model)
            if averaging:  # saved after validation: the average in the model, the raw weights aside
                _swap_average(averaging)
        elif len(progress["history"]) < _last_epoch(progress, epochs):
            raise ValueError(f"it holds no state to resume epoch {len(progress['history']) + 1} from")
    except Exception as err:  # noqa: BLE001 - whatever went wrong, the state is not used
        storage.notice(f"the saved state in {state_dir} cannot be used ({type(err).__name__}: {err}); "
                       "the run starts again from its first epoch.")
        shutil.rmtree(state_dir, ignore_errors=True)
        return fresh
    storage.notice(f"resuming {run_dir.name} after epoch {len(progress['history'])} of {epochs}.")
    return progress


def _write_history_csv(path: Path, history: list[dict]) -> None:
    columns = ["epoch"] + sorted({k for row in history for k in row})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for epoch, row in enumerate(history):
        writer.writerow({"epoch": epoch, **row})
    storage.write_text(path, out.getvalue())


def _tensorboard_installed() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return True
    storage.notice("TensorBoard logs are off: the tensorboard package is not installed (pip install tensorboard).")
    return False


def _missing_monitor(logs: dict) -> KeyError:
    return KeyError(
        f"Training monitors {MONITOR!r} but the logs hold {sorted(logs)}; "
        "pass validation_data to fit and a CategoricalAccuracy metric to compile."
    )


class _SaveEachEpoch(keras.callbacks.Callback):
    """Inside the run's one ``model.fit``: seeds each epoch from the run's seed,
    and after it checks the lock, then saves the progress, the best model so
    far and the variables (:func:`fit`). It runs after every other callback,
    so what it saves includes their changes (a learning rate they lowered)."""

    def __init__(self, run_dir: Path, progress: dict, epochs: int, seed: int, lock, verbose: int,
                 patience: int | None = None):
        super().__init__()
        self.run_dir, self.state_dir = run_dir, run_dir / STATE_DIR
        self.progress, self.epochs, self.seed, self.lock, self.verbose = progress, epochs, seed, lock, verbose
        self.patience = patience

    def on_epoch_begin(self, epoch, logs=None):
        set_seeds(epoch_seed(self.seed, epoch))
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["epoch_seconds"] = time.perf_counter() - self.start
        if MONITOR not in logs:
            raise _missing_monitor(logs)
        if self.lock is not None:
            self.lock.refresh()  # still the owner (else RunLockedError, before anything of this epoch is written)
        progress, state_dir, model = self.progress, self.state_dir, self.model
        progress["history"].append(logs)
        if progress["best_value"] is None or logs[MONITOR] > progress["best_value"]:
            best_file = f"best-e{epoch + 1}.keras"
            storage.atomic_write(state_dir / best_file, _target(model).save)
            progress.update(best_epoch=epoch + 1, best_value=logs[MONITOR], best_file=best_file)
        done = epoch + 1
        if self.patience and done < self.epochs and done - progress["best_epoch"] >= self.patience:
            # Decided from the saved history alone, and saved with it: a resumed run stops where an
            # uninterrupted one does (a callback's own patience count would start afresh).
            progress["stopped_after"] = done
            model.stop_training = True
        # After the last epoch nothing is left to train: a resume needs the best epoch's file only.
        last = done == _last_epoch(progress, self.epochs)
        progress["state_file"] = None if last else _save_state(model, state_dir, done)
        progress["sha256"] = {name: progress["sha256"].get(name) or storage.sha256_file(state_dir / name)
                              for name in (progress["best_file"], progress["state_file"]) if name}
        storage.write_json(state_dir / PROGRESS_FILE, progress)  # the epoch counts from here on
        for old in state_dir.glob("*-*"):
            if old.name not in (progress["state_file"], progress["best_file"]) and not old.name.startswith("."):
                old.unlink(missing_ok=True)
        _write_history_csv(self.run_dir / "history.csv", progress["history"])
        if self.verbose:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "epoch_seconds")
            print(f"epoch {epoch + 1}/{self.epochs}  {shown}  {logs['epoch_seconds']:.1f}s", flush=True)

    def on_train_end(self, logs=None):
        done = len(self.progress["history"])
        # A callback (EarlyStopping) ended the run; the profile's patience has saved it already.
        if self.model.stop_training and 0 < done < self.epochs and self.progress["stopped_after"] != done:
            self.progress["stopped_after"] = done
            storage.write_json(self.state_dir / PROGRESS_FILE, self.progress)


def _epochs_of(train_ds, first: int, epochs: int, seed: int):
    """``(dataset, steps_per_epoch)`` for one ``model.fit`` over epochs ``first`` to ``epochs - 1``.

    A per-epoch split (``for_epoch``) becomes its epochs one after the other,
    each built under its epoch's seeds, exactly as a run that trains only that
    epoch would build it; ``steps_per_epoch`` keeps Keras on one iterator
    through them. Any other dataset is passed as it is (Keras repeats it)."""
    if not hasattr(train_ds, "for_epoch"):
        return train_ds, None
    parts = []
    for epoch in range(first, epochs):
        set_seeds(epoch_seed(seed, epoch))
        parts.append(train_ds.for_epoch(epoch))
    steps = int(parts[0].cardinality())
    if steps < 1:
        raise ValueError(f"The training split's batches per epoch must be known and at least 1; got {steps}.")
    combined = parts[0]
    for part in parts[1:]:
        combined = combined.concatenate(part)
    return combined, steps


def fit(model: keras.Model, train_ds, val_ds, epochs: int, run_dir, *, seed: int = 0, verbose: int = 2,
        callbacks=(), tensorboard: bool = False, lock: storage.RunLock | None = None,
        batching: dict | None = None, patience: int | None = None) -> dict:
    """Train ``model`` for ``epochs`` epochs in ``run_dir``, resuming what a kill left.

    ``model`` must be compiled (a classifier or a Distiller) with a
    ``CategoricalAccuracy`` metric. ``train_ds`` is a ``tf.data.Dataset`` or
    an object with ``for_epoch(epoch)`` giving each epoch's batches (what
    :func:`kd_utils.batches.make_dataset` returns with ``per_epoch=True``), which
    makes a resumed run equal an uninterrupted one. One ``model.fit`` trains
    the run, with ``callbacks`` (any Keras callback: ``EarlyStopping`` and
    ``ReduceLROnPlateau`` keep their state across epochs) and, last, the one
    that saves the progress after every epoch (and the variables, except
    after the last). At the end the best validation epoch's weights are
    loaded back into the (student) model and saved as ``best.keras``. Returns
    ``train_seconds``, ``epoch_seconds``, ``best_epoch``,
    ``best_val_accuracy`` and ``history`` (every epoch, resumed ones too).
    ``batching`` (micro-batches with gradient accumulation, see
    :mod:`kd_utils.experiments.memory`) is kept with the progress: saved state is only
    resumed with the same. A resumed run whose callbacks hold state of their
    own (EarlyStopping's patience count) starts them afresh; ``patience``
    (epochs without a better validation accuracy after which the run stops,
    the best epoch kept) is decided from the saved history instead, so a
    resumed run stops where an uninterrupted one does. An optimizer that
    keeps a running average of the weights (Adam's ``use_ema``) has the
    average validated and kept as the best epoch, the raw weights trained
    (pass no ``SwapEMAWeights``: this does its job, exactly on resume).
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
        raise ValueError(f"patience must be None or a whole number of at least 1, got {patience!r}.")
    epochs = int(epochs)
    run_dir = Path(run_dir)
    state_dir = run_dir / STATE_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    storage.remove_temporaries(run_dir)
    if not model.optimizer.built:
        # Here, not lazily in the first step: TensorFlow traces a step that creates variables
        # twice (a second time without creating them). Resuming restores into these variables.
        model.optimizer.build(_target(model).trainable_variables)
    averaging = _averaging(model)
    if averaging and any(isinstance(c, keras.callbacks.SwapEMAWeights) for c in callbacks):
        raise ValueError("fit validates and keeps the averaged weights itself; pass no SwapEMAWeights callback.")
    progress = _load_progress(model, run_dir, epochs, batching)
    extra = list(callbacks) + ([_ValidateTheAverage(averaging)] if averaging else [])
    if tensorboard and _tensorboard_installed():
        extra.insert(0, keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False,
                                                    profile_batch=0))
    resumed = len(progress["history"])
    if resumed < _last_epoch(progress, epochs):
        data, steps = _epochs_of(train_ds, resumed, epochs, seed)
        # shuffle=False: the tf.data pipeline shuffles itself (Keras would ignore it and warn).
        model.fit(data, validation_data=val_ds, initial_epoch=resumed, epochs=epochs, steps_per_epoch=steps,
                  callbacks=[*extra, _SaveEachEpoch(run_dir, progress, epochs, seed, lock, verbose, patience)],
                  verbose=1 if verbose == 1 else 0, shuffle=False)
    best_path = state_dir / progress["best_file"]
    # When the best epoch is the last one, trained here, the model holds its weights already
    # (rebuilding a large backbone from its file takes seconds) - unless they are averaged: at
    # its end Keras' fit writes the optimizer's average into the model, the raw weights by then.
    if averaging or not (len(progress["history"]) > resumed and progress["best_epoch"] == len(progress["history"])):
        best_model = keras.saving.load_model(best_path, compile=False)
        _target(model).set_weights(best_model.get_weights())
    storage.atomic_write(run_dir / BEST_FILE, lambda tmp: shutil.copyfile(best_path, tmp))
    history = progress["history"]
    epoch_seconds = [row["epoch_seconds"] for row in history]
    return {
        "train_seconds": float(sum(epoch_seconds)),
        "epoch_seconds": epoch_seconds,
        "best_epoch": progress["best_epoch"],
        "best_val_accuracy": progress["best_value"],
        "history": {k: [row[k] for row in history] for k in history[0] if k != "epoch_seconds"},
    }
