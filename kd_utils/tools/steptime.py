"""Seconds per training step of every model a profile trains, on any Keras backend.

``python -m kd_utils.tools.steptime --profile paper --out step_times.json``

Builds the ResNet50 teacher, DSNet and the profile's large students with
``weights=None`` at the profile's image size, compiles each as a two-class
classifier (Adam; loss scaling under ``mixed_float16``, as the pipeline
does) and times ``train_on_batch`` on random images at the profile's batch
size. It imports Keras and the models only, so it also runs where
TensorFlow is not installed, on the JAX or PyTorch backend
(``KERAS_BACKEND=jax``), e.g. on a GPU machine that has JAX but no
TensorFlow. ``python -m kd_utils estimate --profile paper --step-times
step_times.json`` turns the file into runs and hours per notebook.

The numbers are the backend's, not the pipeline's: the same layers and
optimizer, but another compiler (XLA under JAX, always) and no tf.data
input pipeline, so they are a lower bound on a TensorFlow run's step.

On a GPU each entry also holds ``peak_memory_bytes``: the most memory the
backend's allocator held for the model's steps (weights, optimizer state,
activations and the compiler's buffers), the number that says whether the
batch fits a smaller card. PyTorch and TensorFlow reset the peak before each
model; JAX cannot, so under JAX only the first model a process times gets
the figure: time one model per process (``--model``) with the same
``--out``, which each call extends.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .. import config, storage

#: The teacher's name in step-time files and in :mod:`kd_utils.tools.estimate`'s tables.
TEACHER = "ResNet50 teacher"


def build(model: str, image_size: int):
    """``model`` (the teacher, ``"DSNet"`` or a large student's name) with ``weights=None``."""
    from .. import models

    if model == TEACHER:
        return models.build_teacher(image_size, weights=None)
    return models.build_student(model, image_size, weights=None)

PRECISIONS = ("float32", "mixed_float16")

#: What a file written by :func:`measure` must share with a new measurement to be extended by it.
HEADER_KEYS = ("profile", "image_size", "batch_size", "device", "backend", "keras", "steps", "warmup")


def device_name() -> str:
    """The accelerator the Keras backend computes on, else the CPU."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return f"{len(jax.devices())} x {dev.device_kind}"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
        elif backend == "tensorflow":
            from ..reporting import hardware

            return hardware()
    except Exception:  # pragma: no cover - a backend without device queries
        pass
    return config.cpu_description()


def reset_peak_memory() -> bool:
    """Sets the accelerator's peak-memory counter back to what is in use now;
    False where the backend cannot (JAX) or there is no accelerator."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                return True
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
                return True
    except Exception:  # pragma: no cover - a backend without memory statistics
        pass
    return False


def peak_memory_bytes() -> int | None:
    """The most bytes the backend's allocator has held on the first accelerator
    (since :func:`reset_peak_memory`, else since the process started); None on a CPU."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            dev = jax.local_devices()[0]
            if dev.platform != "cpu":
                return int(dev.memory_stats()["peak_bytes_in_use"])
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.max_memory_allocated())
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except Exception:  # pragma: no cover - a backend without memory statistics
        pass
    return None


def time_step(model: str, image_size: int, batch_size: int, precision: str = "float32",
              steps: int = 5, warmup: int = 2, jit_compile: bool = False) -> dict:
    """``{"step_s": median seconds, "first_step_s": ..., "params": n}`` for one model.

    ``first_step_s`` is the first call (tracing and compiling included);
    ``jit_compile``: XLA, as a profile's ``jit_compile`` asks on a GPU. On a
    GPU the entry adds ``peak_memory_bytes`` (:func:`peak_memory_bytes`; under
    JAX the process's peak, which is this model's only if it is the first)."""
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    keras.backend.clear_session(free_memory=True)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        net = build(model, image_size)
        adam = keras.optimizers.Adam(1e-3)
        net.compile(optimizer=keras.optimizers.LossScaleOptimizer(adam) if precision != "float32" else adam,
                    loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                    **({"jit_compile": True} if jit_compile else {}))
    finally:
        keras.config.set_dtype_policy(previous)
    reset_peak_memory()
    first, step = time_train_steps(net, batch_size, image_size, steps, warmup)
    entry = {"step_s": step, "first_step_s": first, "params": int(net.count_params())}
    peak = peak_memory_bytes()
    if peak is not None:
        entry["peak_memory_bytes"] = peak
    return entry


def time_train_steps(net, batch_size: int, image_size: int, steps: int, warmup: int) -> tuple[float, float]:
    """``(first, median)`` seconds of ``net.train_on_batch`` on one random
    batch of images and one-hot labels: the first call (tracing and
    compiling included), then, after ``warmup`` calls in all (at least the
    first), the median of ``steps`` more. ``net`` is a compiled classifier."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch_size, image_size, image_size, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, size=batch_size)]
    start = time.perf_counter()
    net.train_on_batch(x, y)  # returns numbers: the step has finished on the device
    first = time.perf_counter() - start
    for _ in range(max(int(warmup) - 1, 0)):
        net.train_on_batch(x, y)
    times = []
    for _ in range(max(int(steps), 1)):
        start = time.perf_counter()
        net.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def models_of(profile: config.Profile) -> list[str]:
    return [TEACHER, "DSNet", *profile.students]


def measure(profile: config.Profile, precisions=PRECISIONS, steps: int = 5, warmup: int = 2,
            models: list[str] | None = None, out: str | None = None, log=print) -> dict:
    """Times every model in every precision; writes ``out`` (JSON) after each one,
    so that a run cut short keeps what it measured.

    An ``out`` that exists is extended: its models (and any other keys, such
    as a note) stay, those timed again are replaced. It must have been
    measured the same way (:data:`HEADER_KEYS`: profile, sizes, device,
    backend, Keras, steps), else ValueError."""
    import keras

    result = {"profile": profile.name, "image_size": profile.image_size, "batch_size": profile.batch_size,
              "device": device_name(), "backend": keras.backend.backend(), "keras": keras.__version__,
              "steps": steps, "warmup": warmup, "models": {}}
    if out and os.path.exists(out):
        with open(out) as fh:
            earlier = json.load(fh)
        differ = [f"{k} {earlier.get(k)!r} there, {result[k]!r} now" for k in HEADER_KEYS if earlier.get(k) != result[k]]
        if differ:
            raise ValueError(f"{out} holds another measurement ({'; '.join(differ)}): give another --out")
        result = {**earlier, **result, "models": earlier.get("models", {})}  # notes added to the file stay
    timed = 0
    for precision in precisions:
        for name in models or models_of(profile):
            entry = time_step(name, profile.image_size, profile.batch_size, precision, steps, warmup)
            if timed and result["backend"] == "jax":  # JAX's peak so far includes an earlier model's
                entry.pop("peak_memory_bytes", None)
            timed += 1
            result["models"].setdefault(name, {})[precision] = entry
            if log:
                peak = entry.get("peak_memory_bytes")
                log(f"{name:18s} {precision:14s} {entry['step_s'] * 1e3:8.1f} ms/step "
                    f"({profile.batch_size / entry['step_s']:7.0f} img/s; first step {entry['first_step_s']:.1f} s"
                    + (f"; peak memory {peak / 2**30:.2f} GiB" if peak is not None else "") + ")")
            if out:
                storage.write_json(out, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd_utils.tools.steptime", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--precision", action="append", choices=PRECISIONS,
                        help="float32 and/or mixed_float16 (default both)")
    parser.add_argument("--model", action="append", help="time only these (default: teacher, DSNet, students)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", help="write the measurements here as JSON")
    args = parser.parse_args(argv)
    profile = config.get_profile(args.profile)
    try:
        measure(profile, tuple(args.precision or PRECISIONS), args.steps, args.warmup, args.model, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
