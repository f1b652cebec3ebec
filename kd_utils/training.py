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
  and is skipped (:func:`load_if_done`).
"""

from __future__ import annotations

import json
import math
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
    """Wall time of every epoch (``epoch_seconds``) and of the whole fit."""

    def on_train_begin(self, logs=None):
        self.epoch_seconds = []
        self._fit_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.epoch_seconds))


class BestCheckpoint(keras.callbacks.Callback):
    """Save the (student) model whenever the validation metric improves."""

    def __init__(self, path, monitor: str = MONITOR, mode: str = "max"):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -math.inf
        self.best_epoch = None

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


def load_if_done(run_dir, config: dict) -> dict | None:
    """The stored record when this exact configuration already finished, else None."""
    path = Path(run_dir) / "record.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if config_key(record.get("config", {})) == config_key(config) else None


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
    best = BestCheckpoint(run_dir / "best.keras")
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        best,
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        timer,
    ]
    # shuffle=False: the tf.data pipeline shuffles itself (Keras would ignore it and warn).
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False
    )
    if (run_dir / "best.keras").is_file():
        _target(model).set_weights(keras.saving.load_model(run_dir / "best.keras").get_weights())
    return {
        "train_seconds": timer.total_seconds,
        "epoch_seconds": timer.epoch_seconds,
        "best_epoch": best.best_epoch,
        "best_val_accuracy": best.sign * best.best if best.best_epoch else None,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
    }
