"""How long a profile takes: every training run of notebooks 02-07, and its hours.

``python -m kd_utils estimate [--profile NAME] [--flops] [--steps N] [--json]``

:func:`planned_runs` lists the training runs the notebooks make for a
profile, in the order they make them, each once: a run a later notebook asks
for again (same configuration, hence the same run key) is loaded, not
trained, and counts where it is first trained. :func:`notebook_plan` is the one table
of what each notebook asks for; it follows the notebooks' calls into
:mod:`kd_utils.experiments.pipeline` (``train_teacher``, ``repeat``, ``sweep``,
``choose_settings``). Which runs are the same is decided by the pipeline's
own run keys, so the count cannot drift from what the pipeline reuses.

Two things are not known before notebook 04 runs: the temperature and alpha
chosen on validation. The plan assumes the profile's own ``temperature`` (if
the sweep holds it, else the sweep's first) and ``alpha`` (pass ``chosen=``
for another choice); another choice changes the
count by a few runs per seed (which of the later runs coincide with the
sweep's).

Three ways to turn runs into hours:

* **timed** (:func:`estimate`, the default): a few training steps of each
  distinct model on this machine - built with ``weights=None`` (no
  download), at the profile's image size and batch size, with its mixed
  precision / XLA switches, on random images - after one or two warm-up
  steps. A CPU times every model too when none reads images larger than
  :data:`CPU_TIME_ALL_UP_TO` px (the ``kaggle-cpu`` profiles: a minute or
  two); at larger sizes (the teacher and the large students would take
  minutes at 224 px) it times DSNet alone, every other model's step time is
  DSNet's scaled by its FLOPs, and the report says so. FLOPs are a poor
  guide on a CPU: on 2 AVX2 cores the ResNet50 teacher's timed step at
  64 px was 2.0 times its FLOP-scaled one, MobileNet's 7.8 times.
* **flops** (:func:`flop_estimate`): FLOPs per image from
  :func:`kd_utils.tools.flops.analytic_flops` times the images a run
  processes, divided by an ASSUMED sustained training throughput of a T4
  (:data:`T4_THROUGHPUT`). No GPU needed; an estimate to plan a Colab
  session with, not a measurement.
* **measured elsewhere** (:func:`from_step_times`, ``--step-times FILE``):
  the step times :mod:`kd_utils.tools.steptime` measured on another machine
  (e.g. a GPU with JAX but no TensorFlow), one precision of them.

All three count, per run: ``epochs`` passes over the training split (a training
step costs about 3 forward passes: forward, and backward for activations and
weights), one forward pass over the validation split per epoch, one over the
test split at the end, and a fixed :data:`RUN_OVERHEAD_S` (building,
tracing, checkpoints, evaluation). The training-set size comes from the
saved manifest when notebook 01 has made one, else from the profile
(:func:`split_sizes`).
"""

from __future__ import annotations

import dataclasses

from .. import config, paths
from . import steptime
from .steptime import TEACHER

#: Images the paper trained and validated on (5,596 + 1,400) and tested on.
PAPER_TRAIN_VAL_IMAGES = 6996
PAPER_TEST_IMAGES = 3000

#: ASSUMED sustained training throughput of one NVIDIA T4 (FLOP/s), not measured
#: here. The T4's peaks are 8.1 TFLOP/s in float32 and 65 TFLOP/s in float16 on
#: its tensor cores; convolutional networks sustain a fraction of that: these
#: values correspond to about 100 (float32) and 245 (mixed precision) ResNet50
#: training images per second at 224 px, the order of published T4 figures.
T4_THROUGHPUT = {"float32": 2.5e12, "mixed_float16": 6.0e12}
#: A training step's FLOPs per image, as a multiple of the forward pass's.
TRAIN_STEP_FACTOR = 3.0
#: ASSUMED fixed cost of every run, in seconds: building and tracing the model,
#: the per-epoch checkpoints, the teacher's logits, scoring the test split's records.
RUN_OVERHEAD_S = 30.0

#: Models a CPU times in the timed mode when some model reads larger images than
#: :data:`CPU_TIME_ALL_UP_TO`; the others are then scaled from the first timed one by FLOPs.
CPU_TIMED = ("DSNet",)
#: A CPU times every model when no model's input is larger than this (px). On 2 AVX2 cores at
#: ``kaggle-cpu-robust``'s sizes (teacher 64 px, students 32 px) timing all four took 82 s against
#: 11 s for DSNet alone, and the teacher's step came out at 4.9 s (batch 64) against 2.4 s scaled
#: by FLOPs; that run's teacher epochs took 396-413 s (88 steps and the validation split).
CPU_TIME_ALL_UP_TO = 128
#: Largest batch a CPU times; the step of the profile's batch is scaled from it per image. A CPU's
#: seconds per image do not depend on the batch (DSNet at 224 px on 2 cores: 0.191, 0.189 and 0.185
#: s per image at batch 64, 16 and 8), and a step of 64 images takes it about 12 s.
CPU_TIMING_BATCH = 8


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One training run a notebook makes."""

    notebook: str
    what: str
    model: str
    epochs: int
    batch_size: int
    image_size: int
    seed: int
    settings: tuple = ()
    key: str = ""


# --------------------------------------------------------------------------- the plan


def _assumed_choice(profile: config.Profile, chosen: dict | None) -> dict:
    chosen = dict(chosen or {})
    # the choice is one of the sweep's temperatures: the profile's when it is among them
    default_t = profile.temperature if profile.temperature in profile.temperatures else profile.temperatures[0]
    return {"temperature": float(chosen.get("temperature", default_t)),
            "alpha": float(chosen.get("alpha", profile.alpha))}


def notebook_plan(p: config.Profile, chosen: dict) -> list[tuple[str, str, tuple[str, ...], list[dict]]]:
    """What each notebook asks for, in order: ``(notebook, what, students, settings)``.

    Every student in ``students`` runs with every settings dict, each for
    every seed of the profile (the teacher: once, with the profile's seed).
    ``chosen`` holds the temperature and alpha notebook 04 chose on validation.
    Update this table when a notebook's calls change.
    """
    from ..experiments.runs import TEACHER_CONTROLS

    T, a = chosen["temperature"], chosen["alpha"]
    at_chosen = {"temperature": T, "alpha": a}
    dsnet, no_teacher = ("DSNet",), {"alpha": 1.0}
    sweep_eq5 = [{"temperature": t} for t in p.temperatures]
    pretraining = [("02", "teacher pretraining on generated images (once)", (TEACHER,), [{"pretraining": True}])]
    # Trained with Profile.converged(): its seeds, epochs (the most a run may train) and patience.
    converged = [("03", f"DSNet with and without teacher, up to {p.converged_epochs} epochs (convergence check)",
                  dsnet, [{"temperature": p.temperature, "alpha": p.alpha, "converged": True},
                          {**no_teacher, "converged": True}])]
    # A robust teacher and students: DSNet also trained without the views (choices.compared_models).
    without_views = [("06", "DSNet trained without the views: distilled, uniform and shuffled teacher, no teacher",
                      dsnet, [{**at_chosen, "robust": False},
                              *({**at_chosen, "robust": False, "teacher_control": c} for c in TEACHER_CONTROLS),
                              {**no_teacher, "robust": False}])]
    return [
        *(pretraining if p.teacher_pretrain_per_class else []),
        ("02", "ResNet50 teacher (once, the profile's seed)", (TEACHER,), [{}]),
        ("03", "DSNet at the profile's T and alpha", dsnet, [{"temperature": p.temperature, "alpha": p.alpha}]),
        ("03", "DSNet without teacher (alpha = 1)", dsnet, [no_teacher]),
        *(converged if p.converged_epochs else []),
        ("04", "temperature sweep, eq. (5), at the profile's alpha", dsnet, sweep_eq5),
        ("04", "temperature sweep, T^2-scaled soft term", dsnet,
         [{"temperature": t, "scale_by_t2": True} for t in p.temperatures]),
        ("04", "alpha sweep at the chosen T", dsnet, [{"temperature": T, "alpha": x} for x in p.alphas]),
        ("05", "large students at the chosen T and alpha", p.students, [at_chosen]),
        ("05", "large students without teacher", p.students, [no_teacher]),
        ("05", "DSNet with and without teacher", dsnet, [at_chosen, no_teacher]),
        ("06", "DSNet and EfficientNetB0 at the chosen T and alpha", ("DSNet", "EfficientNetB0"), [at_chosen]),
        *(without_views if p.compares_without_views else []),
        ("06", "batch-size sweep (Table 6)", dsnet, [{**at_chosen, "batch_size": b} for b in p.batch_sizes]),
        ("07", "KD gain: without teacher, temperature sweep", dsnet, [no_teacher, *sweep_eq5]),
        ("07", "ablation: eq. (5), T^2, KL at the chosen T and alpha", dsnet,
         [at_chosen, {**at_chosen, "scale_by_t2": True}, {**at_chosen, "soft_loss": "kl"}]),
        ("07", "calibration: DSNet at the chosen T and alpha", dsnet, [at_chosen]),
        ("07", "controls: uniform and shuffled teacher (no and real teacher: above)", dsnet,
         [{**at_chosen, "teacher_control": c} for c in TEACHER_CONTROLS]),
    ]


def plan_table(profile: config.Profile, chosen: dict | None = None) -> list[dict]:
    """:func:`notebook_plan` with, per row, the runs it asks for and how many of them are new
    (not made by an earlier row); ``runs`` holds the new :class:`PlannedRun`\\ s."""
    from ..experiments import runs as run_keys

    chosen = _assumed_choice(profile, chosen)
    seen: set[str] = set()
    rows = []
    for notebook, what, students, settings_list in notebook_plan(profile, chosen):
        asked, new = 0, []
        for student in students:
            for settings in settings_list:
                if student == TEACHER and settings.get("pretraining"):
                    key, _, c = run_keys.pretrain_run(profile, "planned")
                    # Its images per epoch as epochs over the profile's training split.
                    own = 2 * profile.synthetic_per_class * (1 - profile.test_fraction) * (1 - profile.val_fraction)
                    share = 1 - run_keys.PRETRAIN_VAL_SHARE - run_keys.PRETRAIN_TEST_SHARE
                    ratio = 2 * profile.teacher_pretrain_per_class * share / own
                    c = {**c, "epochs": max(1, round(c["epochs"] * ratio))}
                    asked_runs = [(key, c, profile.seed)]
                elif student == TEACHER:
                    key, _, c = run_keys.teacher_run(profile, "planned", "planned")
                    asked_runs = [(key, c, profile.seed)]
                else:
                    asked_runs = []
                    run_profile = profile.converged() if settings.get("converged") else profile
                    options = {k: v for k, v in settings.items() if k != "converged"}
                    for seed in run_profile.seeds:
                        key, _, c = run_keys.student_run(run_profile, "planned", "teacher", student, seed=seed,
                                                         **options)
                        asked_runs.append((key, c, seed))
                for key, c, seed in asked_runs:
                    asked += 1
                    if key in seen:
                        continue
                    seen.add(key)
                    new.append(PlannedRun(notebook, what, student, int(c["epochs"]), int(c["batch_size"]),
                                          int(c["image_size"]), int(seed), tuple(sorted(settings.items())), key))
        rows.append({"notebook": notebook, "what": what, "asked": asked, "new": len(new), "runs": new})
    return rows


def planned_runs(profile: config.Profile, chosen: dict | None = None) -> list[PlannedRun]:
    """Every training run notebooks 02-07 make for ``profile``, each once, in order.

    ``chosen``: ``{"temperature": T, "alpha": a}`` notebook 04 will choose
    (default: the profile's own ``temperature`` and ``alpha``)."""
    return [run for row in plan_table(profile, chosen) for run in row["runs"]]


# --------------------------------------------------------------------------- data size


def split_sizes(profile: config.Profile) -> tuple[dict, str]:
    """``({"train": n, "val": n, "test": n}, where from)``: the saved manifest's
    counts when notebook 01 made one, else what the profile is expected to give."""
    import json
    import math

    path = paths.artifacts_dir(profile) / "data" / "manifest.json"
    try:
        counts = json.loads(path.read_text())["counts"]
        return {s: int(counts[s]["total"]) for s in ("train", "val", "test")}, f"the saved manifest ({path})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if profile.data_source == "synthetic":
        total = 2 * profile.synthetic_per_class
        test = math.ceil(total * profile.test_fraction)  # held-out sizes round up, as scikit-learn's split does
        train_val = total - test
        where = (f"expected: 2 x {profile.synthetic_per_class} synthetic images, test {profile.test_fraction:g}, "
                 f"validation {profile.val_fraction:g} of the rest (no saved manifest)")
    elif profile.data_source == "sample":
        train_val, test = 17, 7
        where = "expected: the 24-image sample (no saved manifest)"
    else:
        train_val, test = PAPER_TRAIN_VAL_IMAGES, PAPER_TEST_IMAGES
        where = (f"expected: the paper's {PAPER_TRAIN_VAL_IMAGES:,} training and validation images, validation "
                 f"{profile.val_fraction:g} of them, {PAPER_TEST_IMAGES:,} test (no saved manifest)")
    val = math.ceil(train_val * profile.val_fraction)
    return {"train": train_val - val, "val": val, "test": test}, where


# --------------------------------------------------------------------------- cost of one step


def model_flops(models_: list[str], image_size: int) -> dict[str, float]:
    """Forward FLOPs per image of each model at ``image_size`` (:func:`kd_utils.tools.flops.analytic_flops`)."""
    import keras

    from .flops import analytic_flops

    for name in models_:
        if (name, image_size) not in _FLOPS:  # an architecture's count at a size never changes: build it once
            keras.backend.clear_session(free_memory=True)
            _FLOPS[name, image_size] = float(analytic_flops(steptime.build(name, image_size))["total"])
    return {name: _FLOPS[name, image_size] for name in models_}


#: The counts at the paper's 224 px, so that an estimate does not build eight models (about 17 s on
#: 2 CPU cores) to count them; tests/test_estimate.py builds each and counts again.
FLOPS_AT_224 = {
    TEACHER: 7_751_200_770, "DSNet": 2_206_962_754, "MobileNet": 1_145_875_458, "VGG16": 30_713_108_994,
    "InceptionV3": 5_693_583_234, "EfficientNetB0": 794_057_306, "ResNet50": 7_751_200_770,
    "ResNet101": 15_194_408_962,
}
_FLOPS: dict[tuple[str, int], float] = {(name, 224): float(n) for name, n in FLOPS_AT_224.items()}


def input_size(profile: config.Profile, model: str) -> int:
    """The image size ``model`` trains at in ``profile``: the teacher's own
    (:attr:`~kd_utils.config.Profile.teacher_size`) or the students'."""
    return profile.teacher_size if model == TEACHER else profile.image_size


def _sizes_text(profile: config.Profile, timed: list[str]) -> str:
    """The input sizes the ``timed`` models were timed at, for the report."""
    if TEACHER in timed and profile.teacher_size != profile.image_size:
        return f"the teacher at {profile.teacher_size} px, the students at {profile.image_size} px"
    return f"{profile.image_size} px"


def flops_per_image(profile: config.Profile, names) -> dict[str, float]:
    """:func:`model_flops` of each model at the size it trains at in ``profile``."""
    return {name: model_flops([name], input_size(profile, name))[name] for name in names}


# --------------------------------------------------------------------------- the estimate


def _run_seconds(run: PlannedRun, sizes: dict, train_image_s: float, forward_image_s: float) -> float:
    """Seconds of one run given the seconds per training image and per forward image."""
    per_epoch = sizes["train"] * train_image_s + sizes["val"] * forward_image_s
    return run.epochs * per_epoch + sizes["test"] * forward_image_s + RUN_OVERHEAD_S


def _seconds_from_steps(runs: list[PlannedRun], sizes: dict, models_: dict, batch_size: int) -> list[float]:
    """Seconds of each run from its model's ``step_s`` (a training step of ``batch_size`` images)."""
    per_run = []
    for r in runs:
        train_image_s = models_[r.model]["step_s"] / batch_size
        per_run.append(_run_seconds(r, sizes, train_image_s, train_image_s / TRAIN_STEP_FACTOR))
    return per_run


def _summarise(profile, runs, sizes, where, per_run_s: list[float], method: str, device: str, models_: dict) -> dict:
    notebooks: dict[str, dict] = {}
    for run, seconds in zip(runs, per_run_s):
        book = notebooks.setdefault(run.notebook, {"runs": 0, "hours": 0.0})
        book["runs"] += 1
        book["hours"] += seconds / 3600
    return {
        "profile": profile.name, "device": device, "method": method, "runs": len(runs),
        "hours": sum(per_run_s) / 3600, "notebooks": notebooks, "train_images": sizes["train"],
        "split_sizes": sizes, "split_sizes_from": where, "models": models_,
        "mixed_precision": profile.mixed_precision, "jit_compile": profile.jit_compile,
        "seeds": list(profile.seeds), "students": list(profile.students),
        "run_overhead_s": RUN_OVERHEAD_S,
    }


def flop_estimate(profile: config.Profile, chosen: dict | None = None, precision: str | None = None) -> dict:
    """Hours of the profile's runs on a T4 by FLOPs and :data:`T4_THROUGHPUT` (an assumption).

    ``precision``: ``"float32"`` or ``"mixed_float16"`` (default: the profile's)."""
    precision = precision or ("mixed_float16" if profile.mixed_precision else "float32")
    throughput = T4_THROUGHPUT[precision]
    runs = planned_runs(profile, chosen)
    sizes, where = split_sizes(profile)
    flops = flops_per_image(profile, sorted({r.model for r in runs}))
    per_run = [_run_seconds(r, sizes, TRAIN_STEP_FACTOR * flops[r.model] / throughput, flops[r.model] / throughput)
               for r in runs]
    method = (f"FLOP estimate: forward FLOPs per image x images processed (a training image counts "
              f"{TRAIN_STEP_FACTOR:g} forward passes) / an ASSUMED T4 throughput of {throughput / 1e12:g} TFLOP/s "
              f"({precision}), plus {RUN_OVERHEAD_S:g} s per run")
    models_ = {m: {"gflops_per_image": f / 1e9} for m, f in flops.items()}
    return _summarise(profile, runs, sizes, where, per_run, method, f"NVIDIA T4 (assumed, {precision})", models_)


def estimate(profile: config.Profile, steps: int = 3, warmup: int = 1, chosen: dict | None = None,
             time_all: bool | None = None, log=None) -> dict:
    """Hours of the profile's runs on THIS machine, from ``steps`` timed training steps per model.

    ``time_all`` (default: on a GPU, and on a CPU when no model's input is
    larger than :data:`CPU_TIME_ALL_UP_TO` px) times every distinct model;
    otherwise only :data:`CPU_TIMED` are timed and the others are scaled
    from the first of them by their FLOPs. A GPU times steps of the profile's batch; a
    CPU times steps of at most :data:`CPU_TIMING_BATCH` images and scales them
    to the profile's batch per image."""
    import tensorflow as tf

    from .. import reporting
    from ..experiments.runs import accelerator_options

    gpu = bool(tf.config.list_physical_devices("GPU"))
    runs = planned_runs(profile, chosen)
    sizes, where = split_sizes(profile)
    names = list(dict.fromkeys(r.model for r in runs))
    if time_all is None:
        time_all = gpu or max(input_size(profile, m) for m in names) <= CPU_TIME_ALL_UP_TO
    flops = flops_per_image(profile, names)
    timed = names if time_all else [m for m in names if m in CPU_TIMED]
    batch = profile.batch_size if gpu else min(profile.batch_size, CPU_TIMING_BATCH)
    models_: dict[str, dict] = {}
    accel = accelerator_options(profile)
    for name in timed:
        if log:
            log(f"  timing {name} ...")
        precision = "mixed_float16" if accel.get("mixed_precision") else "float32"
        step = steptime.time_step(name, input_size(profile, name), batch, precision, steps, warmup,
                                  jit_compile=accel.get("jit_compile", False))["step_s"]
        seconds = step * profile.batch_size / batch
        models_[name] = {"gflops_per_image": flops[name] / 1e9, "step_s": seconds, "timed": True}
    reference = TEACHER if TEACHER in models_ else next(iter(models_))  # a CPU times DSNet alone
    s_per_flop = models_[reference]["step_s"] / (profile.batch_size * flops[reference])
    for name in names:
        if name not in models_:
            models_[name] = {"gflops_per_image": flops[name] / 1e9, "timed": False,
                             "step_s": s_per_flop * flops[name] * profile.batch_size}
    per_run = _seconds_from_steps(runs, sizes, models_, profile.batch_size)
    untimed = [m for m in names if not models_[m]["timed"]]
    scaled = "" if batch == profile.batch_size else f", scaled per image to the profile's batch of {profile.batch_size}"
    method = (f"estimate from {steps} timed training step(s) per model (batch {batch}{scaled}, "
              f"{_sizes_text(profile, timed)}, random images, after {max(warmup, 1)} warm-up step(s)), plus "
              f"{RUN_OVERHEAD_S:g} s per run")
    if untimed:
        method += f"; not timed, scaled from {reference}'s time by FLOPs: {', '.join(untimed)}"
    return _summarise(profile, runs, sizes, where, per_run, method, reporting.hardware(), models_)


def from_step_times(profile: config.Profile, step_times: dict, chosen: dict | None = None,
                    precision: str | None = None) -> dict:
    """Hours of the profile's runs from step times measured by :mod:`kd_utils.tools.steptime`.

    ``step_times``: the JSON that ``python -m kd_utils.tools.steptime --out`` wrote.
    ``precision`` (default: the profile's) picks its float32 or mixed_float16
    times. The measurement must be of the profile's image size and batch size,
    and must hold every model the profile trains."""
    precision = precision or ("mixed_float16" if profile.mixed_precision else "float32")
    for key in ("image_size", "batch_size"):
        if int(step_times.get(key, -1)) != int(getattr(profile, key)):
            raise ValueError(f"the step times were measured at {key} {step_times.get(key)}, "
                             f"profile {profile.name} uses {getattr(profile, key)}")
    runs = planned_runs(profile, chosen)
    sizes, where = split_sizes(profile)
    names = list(dict.fromkeys(r.model for r in runs))
    measured = step_times.get("models", {})
    missing = [m for m in names if precision not in measured.get(m, {})]
    if missing:
        raise ValueError(f"no {precision} step time for {', '.join(missing)} in the measurement")
    flops = flops_per_image(profile, names)
    models_ = {m: {"gflops_per_image": flops[m] / 1e9, "step_s": float(measured[m][precision]["step_s"]),
                   "timed": True} for m in names}
    per_run = _seconds_from_steps(runs, sizes, models_, profile.batch_size)
    method = (f"step times measured by kd_utils.tools.steptime ({step_times.get('backend')} backend, Keras "
              f"{step_times.get('keras')}, {precision}, batch {profile.batch_size}, {profile.image_size} px, "
              f"median of {step_times.get('steps')} steps), plus {RUN_OVERHEAD_S:g} s per run")
    result = _summarise(profile, runs, sizes, where, per_run, method, str(step_times.get("device")), models_)
    result["mixed_precision"] = precision == "mixed_float16"
    return result


NOTEBOOK_NAMES = {"02": "02 teacher", "03": "03 distil DSNet", "04": "04 T and alpha sweep",
                  "05": "05 large students", "06": "06 results", "07": "07 controls, ablation"}


def report(result: dict, plan: list[dict] | None = None) -> str:
    """The estimate as text: per notebook runs and hours, the total, the device and the method."""
    lines = [f"Training time of profile {result['profile']} on {result['device']}"
             + (" (mixed precision)" if result["mixed_precision"] else "")
             + (" (XLA)" if result["jit_compile"] else ""), ""]
    if plan:
        lines += ["| notebook | what | runs asked | new runs |", "|---|---|---:|---:|"]
        lines += [f"| {r['notebook']} | {r['what']} | {r['asked']} | {r['new']} |" for r in plan]
        lines.append("")
    lines += ["| notebook | runs | hours |", "|---|---:|---:|"]
    for book, row in result["notebooks"].items():
        lines.append(f"| {NOTEBOOK_NAMES.get(book, book)} | {row['runs']} | {row['hours']:.2f} |")
    lines.append(f"| **total** | **{result['runs']}** | **{result['hours']:.1f}** |")
    timed = any("step_s" in m for m in result["models"].values())
    lines += ["", "| model | GFLOPs per image |" + (" s per training step |" if timed else ""),
              "|---|---:|" + ("---:|" if timed else "")]
    for name, m in result["models"].items():
        step = "" if not timed else f" {m['step_s']:.3f}" + ("" if m["timed"] else " (scaled)") + " |"
        lines.append(f"| {name} | {m['gflops_per_image']:.3f} |{step}")
    lines += ["", f"Seeds {', '.join(map(str, result['seeds']))}; large students {', '.join(result['students'])}; "
              f"{result['train_images']:,} training images ({result['split_sizes_from']}).",
              f"An estimate, not a measurement: {result['method']}."]
    return "\n".join(lines)

