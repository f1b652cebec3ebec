"""Cost of the models side by side on this machine: size, FLOPs, latency, throughput.

``python -m kd_utils benchmark [--out DIR] [--runs N] [--quick]`` measures, in
one run and at 224x224 (random weights: cost does not depend on them):

* the teacher (ResNet50 + head), DSNet in Keras (float32), DSNet as TFLite
  float32, dynamic-range int8 and full int8 (calibrated on the 24 bundled
  CC0 sample images), MobileNet and EfficientNetB0 with the teacher's head;
* parameters, FLOPs per image counted two ways (:func:`kd_utils.tools.flops.analytic_flops`
  and TensorFlow's own profiler, :func:`kd_utils.tools.flops.profiler_flops`), model file size,
  batch-1 latency (median and 90th percentile over ``runs`` calls after a
  warm-up) and batch-32 throughput; ratios to DSNet float32 (Keras).

And two training-side measurements at the cpu profile's 75 px on synthetic
images: one Distiller epoch with the live teacher vs with precomputed
teacher logits, and the images/s of the tf.data input pipeline alone vs the
images/s of the training step.

FLOPs are counted by :mod:`kd_utils.tools.flops` (its docstring says how).

Performance numbers are printed and written to ``benchmark.md`` / ``.csv`` /
``.png``; they depend on the machine and are never asserted by the tests.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import paths
from . import flops

REFERENCE = "DSNet float32 (Keras)"
OUT_COLUMNS = (
    "model", "format", "params", "gflops", "gflops_conv_dense", "gflops_tf_profiler", "gflops_tf_conv_dense",
    "size_mb", "latency_ms_median", "latency_ms_p90", "throughput_ips",
    "params_ratio", "gflops_ratio", "size_ratio", "latency_ratio", "throughput_ratio",
)


# --------------------------------------------------------------------------- settings and machine


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one benchmark run measures; :func:`settings` gives the full and the quick one."""

    image_size: int = 224
    runs: int = 50
    warmup: int = 5
    throughput_batch: int = 32
    throughput_batches: int = 5
    train_size: int = 75
    train_per_class: int = 256
    train_batch: int = 64
    timed_epochs: int = 3
    #: Epochs of one DSNet distillation run in the cpu profile (time saved per run).
    epochs_per_run: int = 8
    quick: bool = False


def settings(quick: bool = False, runs: int | None = None) -> Settings:
    """The full settings, or ``quick`` ones (tiny images and counts) for tests."""
    from .. import config

    base = Settings(epochs_per_run=config.get_profile("cpu").student_epochs)
    if quick:
        base = dataclasses.replace(
            base, image_size=32, runs=3, warmup=1, throughput_batches=1, train_size=32,
            train_per_class=16, train_batch=16, timed_epochs=1, quick=True,
        )
    if runs is not None:
        if runs < 1:
            raise ValueError(f"runs must be at least 1, got {runs}.")
        base = dataclasses.replace(base, runs=runs, throughput_batches=max(1, min(base.throughput_batches, runs)))
    return base


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what Python knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """One line naming the machine and the library versions."""
    import importlib.metadata

    import keras
    import tensorflow as tf

    try:
        litert = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        litert = "not installed"
    return (
        f"{cpu_model()}, {os.cpu_count()} logical cores; TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"LiteRT (ai-edge-litert) {litert}, Python {platform.python_version()}; "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    )


# --------------------------------------------------------------------------- inference


def sample_images(image_size: int) -> np.ndarray:
    """The bundled CC0 sample images at ``image_size`` (uint8), as the data pipeline reads them."""
    from .. import batches

    files = sorted(p for p in paths.sample_dir().iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"No sample images in {paths.sample_dir()}.")
    return np.stack([batches.load_image(str(p), image_size).numpy() for p in files])


def time_runner(runner, images: np.ndarray, s: Settings) -> dict[str, float]:
    """Batch-1 latency (median, p90, in ms) and batch-N throughput (images/s)."""
    one = images[:1]
    batch = np.resize(images, (s.throughput_batch, *images.shape[1:]))
    for _ in range(s.warmup):
        runner.predict_logits(one)
    latencies = []
    for _ in range(s.runs):
        start = time.perf_counter()
        runner.predict_logits(one)
        latencies.append(time.perf_counter() - start)
    runner.predict_logits(batch, batch_size=s.throughput_batch)  # warm-up at this batch size
    start = time.perf_counter()
    for _ in range(s.throughput_batches):
        runner.predict_logits(batch, batch_size=s.throughput_batch)
    seconds = time.perf_counter() - start
    return {
        "latency_ms_median": 1000 * float(np.median(latencies)),
        "latency_ms_p90": 1000 * float(np.percentile(latencies, 90)),
        "throughput_ips": s.throughput_batch * s.throughput_batches / seconds,
    }


def _model_builders(size: int):
    from .. import models

    return [
        ("Teacher ResNet50", lambda: models.build_teacher(size, weights=None)),
        (REFERENCE, lambda: models.build_dsnet(size)),
        ("MobileNet", lambda: models.build_student("MobileNet", size, weights=None)),
        ("EfficientNetB0", lambda: models.build_student("EfficientNetB0", size, weights=None)),
    ]


#: DSNet's TFLite variants: row name and ``quantize`` of :func:`kd_utils.tools.tflite_export.export_tflite`.
TFLITE_VARIANTS = (
    ("DSNet TFLite float32", "none"),
    ("DSNet TFLite dynamic int8", "dynamic"),
    ("DSNet TFLite full int8", "int8"),
)
ROW_ORDER = ("Teacher ResNet50", REFERENCE, *(name for name, _ in TFLITE_VARIANTS), "MobileNet", "EfficientNetB0")


def inference_table(s: Settings, work_dir, log=print):
    """One row per model (see :data:`ROW_ORDER`) with :data:`OUT_COLUMNS`."""
    import gc

    import keras
    import pandas as pd

    from .. import models
    from . import deploy, tflite_export

    work_dir = Path(work_dir)
    images = sample_images(s.image_size)
    threads = os.cpu_count()
    rows = {}
    for name, build in _model_builders(s.image_size):
        log(f"  {name}: building, counting FLOPs, timing ...")
        model = build()
        path = work_dir / f"{name.split()[0].lower()}.keras"
        model.save(path)
        analytic, profiled = flops.analytic_flops(model), flops.profiler_flops(model)
        row = {
            "model": name, "format": "Keras .keras", "params": models.count_params(model)["total"],
            "gflops": analytic["total"] / 1e9, "gflops_conv_dense": analytic["conv_dense"] / 1e9,
            "gflops_tf_profiler": profiled["total"] / 1e9, "gflops_tf_conv_dense": profiled["conv_dense"] / 1e9,
            "size_mb": path.stat().st_size / 1e6,
            **time_runner(deploy.KerasRunner(model, path), images, s),
        }
        rows[name] = row
        if name == REFERENCE:
            for variant, quantize in TFLITE_VARIANTS:
                log(f"  {variant}: exporting, timing ...")
                tflite = tflite_export.export_tflite(model, work_dir / f"dsnet_{quantize}.tflite", quantize, images)
                runner = deploy.TFLiteRunner(tflite, num_threads=threads)
                rows[variant] = {
                    **row, "model": variant, "format": "TFLite .tflite", "size_mb": tflite.stat().st_size / 1e6,
                    **time_runner(runner, images, s),
                }
        del model
        keras.backend.clear_session()
        gc.collect()
    table = pd.DataFrame([rows[name] for name in ROW_ORDER])
    ref = table.set_index("model").loc[REFERENCE]
    table["params_ratio"] = table.params / ref.params
    table["gflops_ratio"] = table.gflops / ref.gflops
    table["size_ratio"] = table.size_mb / ref.size_mb
    table["latency_ratio"] = table.latency_ms_median / ref.latency_ms_median
    table["throughput_ratio"] = table.throughput_ips / ref.throughput_ips
    return table[list(OUT_COLUMNS)]


# --------------------------------------------------------------------------- training side


def _synthetic_manifest(folder: Path, per_class: int, size: int, seed: int):
    """A manifest whose rows are all ``train``: the synthetic PNGs as written, no validation needed."""
    import pandas as pd

    from .. import data, synthetic

    root = synthetic.write_dataset(folder, per_class, size, seed)
    paths = sorted(root.glob("*/*.png"))
    frame = pd.DataFrame({
        "path": [str(p) for p in paths],
        "label": [synthetic.CLASS_NAMES.index(p.parent.name) for p in paths],
        "split": "train",
    })
    return data.Manifest(frame=frame, report=pd.DataFrame(columns=["path", "status", "reason"]), source="synthetic")


def _images_per_second(dataset) -> tuple[float, int]:
    start, n = time.perf_counter(), 0
    for _, y in dataset:
        n += int(y.shape[0])
    return n / (time.perf_counter() - start), n


def training_measurements(s: Settings, work_dir, seed: int = 0, log=print) -> dict[str, float]:
    """Distiller epoch with the live teacher vs precomputed logits; input pipeline vs training step.

    Both on synthetic images at ``s.train_size``; every epoch time is measured
    after one warm-up epoch (tracing, and filling the dataset cache).
    """
    import keras

    from .. import batches, evaluation, models
    from ..distillation import Distiller

    manifest = _synthetic_manifest(Path(work_dir) / "synthetic", s.train_per_class, s.train_size, seed)
    n = len(manifest.frame)
    size, batch = s.train_size, s.train_batch

    def epoch_seconds(distiller, dataset) -> float:
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3), alpha=0.1, temperature=10.0)
        with warnings.catch_warnings():  # the dataset shuffles itself; Keras notes it ignores shuffle=True
            warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
            distiller.fit(dataset, epochs=1, verbose=0)  # warm-up
            start = time.perf_counter()
            distiller.fit(dataset, epochs=s.timed_epochs, verbose=0)
        return (time.perf_counter() - start) / s.timed_epochs

    keras.utils.set_random_seed(seed)
    teacher = models.build_teacher(size, weights=None)
    log(f"  Distiller epoch with the live teacher ({n} images, {size}px, batch {batch}) ...")
    live_ds = batches.make_dataset(manifest, "train", size, batch, seed=seed)
    live = epoch_seconds(Distiller(student=models.build_dsnet(size), teacher=teacher), live_ds)
    log("  teacher logits once, then Distiller epoch with precomputed logits ...")
    start = time.perf_counter()
    ordered = batches.make_dataset(manifest, "train", size, 128, shuffle=False, cache=False)
    logits = evaluation.predict(teacher, ordered).logits.astype("float32")
    teacher_pass = time.perf_counter() - start
    pre_ds = batches.make_dataset(manifest, "train", size, batch, seed=seed, teacher_logits=logits)
    precomputed = epoch_seconds(Distiller(student=models.build_dsnet(size), teacher=None), pre_ds)
    log("  input pipeline alone ...")
    uncached = batches.make_dataset(manifest, "train", size, batch, seed=seed, cache=False)
    _images_per_second(uncached.take(1))  # builds the pipeline's functions
    pipeline_ips, _ = _images_per_second(uncached)
    cached_ips, _ = _images_per_second(pre_ds)  # filled during the Distiller epochs
    return {
        "images": n, "image_size": size, "batch_size": batch,
        "epoch_s_live_teacher": live,
        "epoch_s_precomputed_logits": precomputed,
        "teacher_logits_once_s": teacher_pass,
        "saved_s_per_epoch": live - precomputed,
        "epochs_per_run": s.epochs_per_run,
        "saved_s_per_run_gross": s.epochs_per_run * (live - precomputed),
        "saved_s_per_run": s.epochs_per_run * (live - precomputed) - teacher_pass,
        "pipeline_ips_decode": pipeline_ips,
        "pipeline_ips_cached": cached_ips,
        "train_ips_live_teacher": n / live,
        "train_ips_precomputed_logits": n / precomputed,
    }


# --------------------------------------------------------------------------- reports


def _x(value: float) -> str:
    return f"×{value:.3g}"


def markdown(table, training: dict, s: Settings, header: str) -> str:
    """The report: machine line, the model table, the FLOPs cross-check, the training side."""
    lines = [
        "# Inference and training cost",
        "",
        f"Machine: {header}.",
        f"Inference at {s.image_size}x{s.image_size}, random weights (cost does not depend on them); "
        f"batch-1 latency over {s.runs} calls after {s.warmup} warm-up calls, throughput over "
        f"{s.throughput_batches} batch(es) of {s.throughput_batch}; TFLite with {os.cpu_count()} interpreter threads; "
        f"ratios (×) relative to {REFERENCE}." + (" QUICK settings: numbers are not meaningful." if s.quick else ""),
        "",
        "| Model | Format | Params | × | GFLOPs | × | GFLOPs (TF profiler) | Size MB | × "
        "| Latency b1 median ms | × | Latency b1 p90 ms | Throughput b32 img/s | × |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.model} | {r.format} | {r.params:,} | {_x(r.params_ratio)} | {r.gflops:.3f} | {_x(r.gflops_ratio)} "
            f"| {r.gflops_tf_profiler:.3f} | {r.size_mb:.2f} | {_x(r.size_ratio)} | {r.latency_ms_median:.2f} "
            f"| {_x(r.latency_ratio)} | {r.latency_ms_p90:.2f} | {r.throughput_ips:.1f} | {_x(r.throughput_ratio)} |"
        )
    lines += [
        "",
        "FLOPs per image: additions and multiplications, a multiply-accumulate counting 2 "
        "(rules in `kd_utils/tools/benchmark.py`). Cross-check with TensorFlow's profiler: the conv/dense parts "
        "agree exactly; the totals differ by what TensorFlow's graph computes besides (per-channel batch-norm "
        f"constants, swish's multiply by beta = 1), within {flops.TOTAL_TOLERANCE:.0%} at 224 px:",
        "",
        "| Model | conv/dense analytic | conv/dense TF | total analytic | total TF | total difference |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in table.drop_duplicates("gflops_tf_profiler").itertuples():
        name = "DSNet (all formats)" if r.model == REFERENCE else r.model
        diff = (r.gflops - r.gflops_tf_profiler) / r.gflops_tf_profiler
        same = "" if round(r.gflops_conv_dense * 1e9) == round(r.gflops_tf_conv_dense * 1e9) else " (MISMATCH)"
        lines.append(
            f"| {name} | {r.gflops_conv_dense * 1e9:,.0f} | {r.gflops_tf_conv_dense * 1e9:,.0f}{same} "
            f"| {r.gflops * 1e9:,.0f} | {r.gflops_tf_profiler * 1e9:,.0f} | {diff:+.3%} |"
        )
    t = training
    bottleneck = t["pipeline_ips_decode"] < t["train_ips_precomputed_logits"]
    lines += [
        "",
        f"## Training side ({t['images']} synthetic images at {t['image_size']} px, batch {t['batch_size']})",
        "",
        "DSNet distilled from the ResNet50 teacher; training epochs only (with a validation split, the live "
        "teacher also runs on it every epoch). Epoch times after one warm-up epoch.",
        "",
        "| Measurement | Value |",
        "|---|--:|",
        f"| Distiller epoch, live ResNet50 teacher | {t['epoch_s_live_teacher']:.2f} s |",
        f"| Distiller epoch, precomputed teacher logits | {t['epoch_s_precomputed_logits']:.2f} s |",
        f"| Teacher logits computed once (one pass, building the predict function included) "
        f"| {t['teacher_logits_once_s']:.2f} s |",
        f"| Saved per epoch | {t['saved_s_per_epoch']:.2f} s |",
        f"| Saved per run of {t['epochs_per_run']} epochs, logits already cached (later runs in the same session) "
        f"| {t['saved_s_per_run_gross']:.2f} s |",
        f"| Saved per run of {t['epochs_per_run']} epochs, net of the one pass | {t['saved_s_per_run']:.2f} s |",
        f"| Input pipeline alone, decode + resize (no cache) | {t['pipeline_ips_decode']:.0f} img/s |",
        f"| Input pipeline alone, cached (epochs after the first) | {t['pipeline_ips_cached']:.0f} img/s |",
        f"| Training step, precomputed logits | {t['train_ips_precomputed_logits']:.0f} img/s |",
        f"| Training step, live teacher | {t['train_ips_live_teacher']:.0f} img/s |",
        "",
        "Input pipeline: "
        + (
            "decoding is SLOWER than the training step, so it limits the first epoch; later epochs read the cache."
            if bottleneck
            else "not the bottleneck: even without the cache it delivers more images/s than the training step uses."
        ),
    ]
    return "\n".join(lines) + "\n"


def plot(table, path) -> Path:
    """Bar plots of batch-1 latency and file size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ["tab:orange" if m.startswith("DSNet") else "tab:blue" for m in table.model]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, column, label in (
        (axes[0], "latency_ms_median", "batch-1 latency, median (ms, log)"),
        (axes[1], "size_mb", "model file size (MB, log)"),
    ):
        ax.barh(table.model, table[column], color=colours)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        for y, value in enumerate(table[column]):
            ax.text(value, y, f" {value:.3g}", va="center", fontsize=8)
    axes[0].invert_yaxis()  # shared: the first row on top in both
    fig.suptitle("DSNet (orange) vs larger models on this CPU")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def run(out_dir=None, runs: int | None = None, quick: bool = False, log=print) -> dict[str, Path]:
    """Measure everything, write ``benchmark.md`` / ``.csv`` / ``.png`` (and the training
    numbers as ``benchmark_training.csv``) into ``out_dir``; print the report."""
    import pandas as pd

    s = settings(quick, runs)
    out_dir = Path(out_dir) if out_dir else paths.repo_root() / "results" / "benchmark"
    out_dir.mkdir(parents=True, exist_ok=True)
    header = machine_line()
    log(f"Benchmark on {header}")
    with tempfile.TemporaryDirectory(prefix="kd_bench_") as work:
        log(f"Inference at {s.image_size}px:")
        table = inference_table(s, work, log=log)
        log(f"Training side at {s.train_size}px:")
        training = training_measurements(s, work, log=log)
    written = {
        "md": out_dir / "benchmark.md",
        "csv": out_dir / "benchmark.csv",
        "training_csv": out_dir / "benchmark_training.csv",
        "png": out_dir / "benchmark.png",
    }
    report = markdown(table, training, s, header)
    written["md"].write_text(report)
    table.to_csv(written["csv"], index=False)
    pd.DataFrame([{"measurement": k, "value": v} for k, v in training.items()]).to_csv(written["training_csv"], index=False)
    plot(table, written["png"])
    log("\n" + report)
    log("Written: " + ", ".join(str(p) for p in written.values()))
    return written
