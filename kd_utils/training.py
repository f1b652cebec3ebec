"""Training runs that survive a disconnect and are skipped when already done.

A run lives in one folder (``run_dir``):

* ``backup/``       - ``BackupAndRestore`` state: an interrupted ``fit`` resumes
  at the last finished epoch;
* ``best.keras``    - the model (for a Distiller: only the student) of the
  epoch with the best validation metric; it is restored at the end, so the
  epoch is chosen on validation, never on test;
* ``history.csv``   - one line per epoch (``CSVLogger``);
* ``record.json``   - written last: the run's configuration, timing and
  results. A run whose ``record.json`` has the same configuration is done
  and is skipped (:func:`load_or_prepare`).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from pathlib import Path

import keras

MONITOR = "val_categorical_accuracy"


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


def _target(model: keras.Model) -> keras.Model:
    """The model worth saving: a Distiller's student, else the model itself."""
    return getattr(model, "student", model)


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, added to the logs as ``epoch_seconds``."""

    def on_train_begin(self, logs=None):
        self.epoch_seconds = []
        self._fit_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        if logs is not None:  # so that CSVLogger keeps it across a resume
            logs["epoch_seconds"] = self.epoch_seconds[-1]


class BestCheckpoint(keras.callbacks.Callback):
    """Save the (student) model whenever the validation metric improves."""

    def __init__(self, path, monitor: str = MONITOR, mode: str = "max", history_csv=None):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -math.inf
        self.best_epoch = None
        # After a resume, the epochs already logged count: the best so far
        # is not overwritten by a worse later epoch.
        if history_csv and Path(history_csv).is_file() and self.path.is_file():
            with open(history_csv, newline="") as f:
                for row in csv.DictReader(f):
                    if row.get(monitor) and self.sign * float(row[monitor]) > self.best:
                        self.best = self.sign * float(row[monitor])
                        self.best_epoch = int(row["epoch"]) + 1

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"BestCheckpoint monitors {self.monitor!r} but the logs hold {sorted(logs or {})}; "
                "pass validation_data to fit and a CategoricalAccuracy metric to compile."
            )
        if self.sign * float(value) > self.best:
            self.best = self.sign * float(value)
            self.best_epoch = epoch + 1
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _target(self.model).save(self.path)


def config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def load_or_prepare(run_dir, config: dict) -> dict | None:
    """The stored record when this exact configuration already finished, else None.

    Otherwise the folder is made ready for this configuration: what an
    earlier run with another configuration left there (backup, checkpoint,
    log) is deleted, so that only a run of the same configuration resumes.
    """
    run_dir = Path(run_dir)
    record_path, config_path = run_dir / "record.json", run_dir / "config.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if config_key(record.get("config", {})) == config_key(config):
            return record
    if config_path.is_file() and config_path.read_text() != config_key(config):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(config_key(config))
    (run_dir / "record.json").unlink(missing_ok=True)
    return None


def save_record(run_dir, record: dict) -> Path:
    path = Path(run_dir) / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=float))
    return path


def fit(model: keras.Model, train_ds, val_ds, epochs: int, run_dir, verbose: int = 2) -> dict:
    """``model.fit`` with backup/restore, best-on-validation and timing.

    ``model`` must be compiled (a classifier or a Distiller) with a
    ``CategoricalAccuracy`` metric. At the end the best validation epoch's
    weights are loaded back into the (student) model. Returns a dict with
    ``train_seconds``, ``epoch_seconds``, ``best_epoch``, ``best_val_accuracy``
    and ``history``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    timer = EpochTimer()
    best = BestCheckpoint(run_dir / "best.keras", history_csv=run_dir / "history.csv")
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        timer,  # before the logger, which then records epoch_seconds
        best,
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    # shuffle=False: the tf.data pipeline shuffles itself (Keras would ignore it and warn).
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False
    )
    if (run_dir / "best.keras").is_file():
        best_model = keras.saving.load_model(run_dir / "best.keras", compile=False)
        _target(model).set_weights(best_model.get_weights())
    with open(run_dir / "history.csv", newline="") as f:  # all epochs, resumed ones too
        epoch_seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
    return {
        "train_seconds": float(sum(epoch_seconds)),
        "epoch_seconds": epoch_seconds,
        "best_epoch": best.best_epoch,
        "best_val_accuracy": best.sign * best.best if best.best_epoch else None,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
    }
