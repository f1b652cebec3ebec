"""Training that fits in the accelerator's memory: micro-batches with gradient accumulation.

A large model at the paper's batch (e.g. ResNet101 at batch 64, 224 px,
float32 on a 15 GB T4) may run out of GPU memory. :func:`fit_within_memory`
builds, compiles and fits a run; when its first epoch runs out of memory it
builds the run again with half the micro-batch and an optimizer that
averages the gradients of ``batch / micro_batch`` micro-batches before each
update (Keras 3's ``gradient_accumulation_steps``), so each update still
sees the run's batch: the effective batch, and so the run's key, do not
change. It halves until the first epoch fits or the micro-batch would fall
below :data:`MIN_MICRO_BATCH`, then raises :class:`OutOfMemoryError`.

The micro-batches come from the same example order as the full batches
(:func:`kd_utils.batches.make_dataset`: epoch ``k`` is a function of the seed
and ``k``), so each group of ``accumulation_steps`` micro-batches holds
exactly one full batch's images, except at the end of an epoch whose size is
not a multiple of the batch: its last, smaller micro-batches are averaged
with the next epoch's first ones. BatchNorm layers see the micro-batch. The
fallback is thus the same training up to these details, not bit-identical.

The micro-batch is stored with the run's per-epoch progress, so a resumed
run uses the one it started with (the accumulators are optimizer variables,
saved and restored with the others).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

from .. import storage, training

#: The smallest micro-batch tried before giving up (BatchNorm statistics of
#: fewer images are too noisy to be worth training with).
MIN_MICRO_BATCH = 4

#: Words in the messages of the errors that TensorFlow, XLA and cuDNN raise
#: when GPU memory runs out but that are not ``ResourceExhaustedError``
#: (an ``InternalError`` or ``UnknownError`` with one of these in its text).
_OOM_WORDS = (
    "out of memory",
    "resource_exhausted",
    "resource exhausted",
    "oom when allocating",
    "failed to allocate",
    "dst tensor is not initialized",
    "cudnn_status_alloc_failed",
    "cuda_error_out_of_memory",
    "cublas_status_alloc_failed",
)


class OutOfMemoryError(RuntimeError):
    """Training does not fit in memory even at the smallest micro-batch tried."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for the errors a GPU running out of memory raises in TensorFlow 2.19-2.21:
    ``tf.errors.ResourceExhaustedError`` (eager, graph and XLA with
    ``RESOURCE_EXHAUSTED``), and the ``InternalError`` / ``UnknownError``
    variants whose message says so (a copy to the GPU that cannot allocate,
    cuDNN or cuBLAS failing to allocate its workspace)."""
    import tensorflow as tf

    if isinstance(err, tf.errors.ResourceExhaustedError):
        return True
    if isinstance(err, (tf.errors.InternalError, tf.errors.UnknownError)):
        text = str(err).lower()
        return any(word in text for word in _OOM_WORDS)
    return False


@dataclass(frozen=True)
class Batching:
    """A run's batch (what its key holds) split into micro-batches of ``micro_batch`` images."""

    batch_size: int
    micro_batch: int

    def __post_init__(self):
        if self.micro_batch < 1 or self.batch_size % self.micro_batch:
            raise ValueError(f"micro-batch {self.micro_batch} does not divide batch {self.batch_size}.")

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // self.micro_batch

    def smaller(self, floor: int = MIN_MICRO_BATCH) -> "Batching | None":
        """About half the micro-batch: the largest divisor of the batch that is at
        most half the current micro-batch (64 -> 32 -> 16 -> 8 -> 4; 18 -> 9 -> 3),
        so every update still averages one whole batch; None below ``floor``."""
        divisors = [d for d in range(self.micro_batch // 2, 0, -1) if self.batch_size % d == 0]
        if not divisors or divisors[0] < floor:
            return None
        return Batching(self.batch_size, divisors[0])

    def saved(self) -> dict | None:
        """What the run's progress stores: None for plain full batches (as before the fallback existed)."""
        if self.accumulation_steps == 1:
            return None
        return {"micro_batch": self.micro_batch, "accumulation_steps": self.accumulation_steps,
                "effective_batch": self.batch_size}

    def describe(self) -> str:
        return (f"micro-batches of {self.micro_batch} x {self.accumulation_steps} accumulation steps "
                f"(effective batch {self.batch_size})")


def saved_batching(run_dir, batch_size: int) -> Batching:
    """The batching an interrupted run was trained with (its progress says), else full batches."""
    progress = storage.read_json(Path(run_dir) / training.STATE_DIR / training.PROGRESS_FILE)
    saved = progress.get("batching") if isinstance(progress, dict) else None
    try:
        if saved and int(saved["effective_batch"]) == int(batch_size):
            return Batching(int(batch_size), int(saved["micro_batch"]))
    except (KeyError, TypeError, ValueError):
        pass  # training.fit finds the progress unusable and starts again
    return Batching(int(batch_size), int(batch_size))


def _epochs_saved(run_dir) -> int:
    progress = storage.read_json(Path(run_dir) / training.STATE_DIR / training.PROGRESS_FILE)
    return len(progress.get("history") or []) if isinstance(progress, dict) else 0


def fit_within_memory(build, batch_size: int, epochs: int, run_dir, *, min_micro_batch: int = MIN_MICRO_BATCH,
                      **fit_args):
    """Build, compile and fit a run, with smaller micro-batches when it runs out of memory.

    ``build(batching)`` seeds, builds and compiles the model with an
    optimizer of ``batching.accumulation_steps`` and returns ``(model,
    (train, val, test))`` with datasets of ``batching.micro_batch``;
    ``fit_args`` go to :func:`kd_utils.training.fit`. Returns ``(model,
    splits, fit_info)``; ``fit_info["batching"]`` holds the micro-batch, the
    accumulation steps, the effective batch and the micro-batches that ran
    out of memory. Only an out-of-memory error before the run's first epoch
    is saved falls back: a saved epoch ties the run to its micro-batch.
    """
    batching = saved_batching(run_dir, batch_size)
    failed: list[int] = []
    while True:
        model, splits = build(batching)
        retry = None
        try:
            fit_info = training.fit(model, splits[0], splits[1], epochs, run_dir, batching=batching.saved(),
                                    **fit_args)
        except Exception as err:  # noqa: BLE001  (anything but running out of memory is raised again)
            if not is_out_of_memory(err):
                raise
            saved = _epochs_saved(run_dir)
            if saved:
                raise OutOfMemoryError(
                    f"Out of memory at {batching.describe()} after {saved} saved epoch(s) of {Path(run_dir).name}; "
                    "the saved state belongs to this micro-batch. Free GPU memory (restart the runtime) and run "
                    f"again, or delete {Path(run_dir) / training.STATE_DIR} to start over with smaller micro-batches."
                ) from err
            failed.append(batching.micro_batch)
            retry = batching.smaller(min_micro_batch)
            if retry is None:
                raise OutOfMemoryError(
                    f"Out of memory training {Path(run_dir).name} at batch {batch_size} even with micro-batches of "
                    f"{failed[-1]} (tried {', '.join(map(str, failed))}; none below {min_micro_batch}): use mixed "
                    "precision (--mixed-precision), a smaller batch or image size, or a GPU with more memory."
                ) from err
        if retry is None:
            fit_info["batching"] = {"micro_batch": batching.micro_batch,
                                    "accumulation_steps": batching.accumulation_steps,
                                    "effective_batch": batching.batch_size, "out_of_memory_at": failed}
            if failed:
                print(f"note: {Path(run_dir).name} trained with {batching.describe()}: batch "
                      f"{', '.join(map(str, failed))} ran out of memory.", flush=True)
            return model, splits, fit_info
        storage.notice(f"out of memory at micro-batch {failed[-1]}; retrying {Path(run_dir).name} with "
                       f"{retry.describe()}.")
        model = splits = None
        gc.collect()  # the failed model's tensors go before the next one is built
        batching = retry
