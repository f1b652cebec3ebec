"""The paper's steps as functions of a profile: data, teacher, distilled student.

Notebooks and the command line call these, so a step behaves the same
wherever it runs. Each training step writes a run folder under
``artifacts/<profile>/`` (see :mod:`kd_utils.training`) and is skipped when
the same configuration already finished there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from . import config, data, evaluation, models, reporting, training
from .distillation import Distiller, SoftKLDivergence


def prepare_data(profile: config.Profile, root=None, rebuild: bool = False) -> data.Manifest:
    """The profile's validated manifest, built once and stored in the artifacts folder."""
    folder = config.artifacts_dir(profile) / "data"
    if not rebuild and (folder / "manifest.csv").is_file():
        return data.Manifest.load(folder)
    manifest = data.build_manifest(
        profile.data_source,
        root,
        image_size=profile.image_size,
        seed=profile.seed,
        val_fraction=profile.val_fraction,
        test_fraction=profile.test_fraction,
        synthetic_per_class=profile.synthetic_per_class,
        work_dir=folder / "converted",
        remove_test_duplicates=profile.remove_test_duplicates,
    )
    manifest.save(folder)
    return manifest


def datasets(profile: config.Profile, manifest: data.Manifest, batch_size: int | None = None, teacher=None):
    """``(train, val, test)`` tf.data pipelines at the profile's image size.

    With a ``teacher``, train and validation batches carry its precomputed
    logits (inputs are not augmented, so they are the same every epoch):
    the teacher runs once per split instead of once per epoch and run.
    """
    batch_size = batch_size or profile.batch_size
    return tuple(
        data.make_dataset(
            manifest, split, profile.image_size, batch_size, seed=profile.seed,
            teacher_logits=None if teacher is None or split == "test" else teacher_logits(profile, manifest, teacher, split),
        )
        for split in data.SPLITS
    )


_LOGITS_CACHE: dict = {}


def teacher_logits(profile: config.Profile, manifest: data.Manifest, teacher, split: str):
    """The teacher's logits for every image of ``split``, in manifest order (cached in memory)."""
    key = (id(teacher), profile.name, profile.image_size, split, len(manifest.frame))
    cached = _LOGITS_CACHE.get(key)
    # The entry holds the teacher itself: an id is only unique while its object lives.
    if cached is None or cached[0] is not teacher:
        ordered = data.make_dataset(manifest, split, profile.image_size, 128, shuffle=False, cache=False)
        cached = _LOGITS_CACHE[key] = (teacher, evaluation.predict(teacher, ordered).logits.astype("float32"))
    return cached[1]


def _classifier_compile(model: keras.Model, learning_rate: float, **compile_args) -> None:
    model.compile(
        optimizer=_optimizer(learning_rate, compile_args.pop("mixed_precision", False)),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy()],
        **compile_args,
    )


def _optimizer(learning_rate: float, mixed_precision: bool):
    adam = keras.optimizers.Adam(learning_rate)
    return keras.optimizers.LossScaleOptimizer(adam) if mixed_precision else adam


def accelerator_options(profile: config.Profile) -> dict:
    """The profile's mixed precision / XLA switches, applied only on a GPU.

    On a CPU float16 is slower, not faster, so both stay off there; the run's
    record lists them when they are on.
    """
    import tensorflow as tf

    if not (profile.mixed_precision or profile.jit_compile) or not tf.config.list_physical_devices("GPU"):
        return {}
    return {"mixed_precision": bool(profile.mixed_precision), "jit_compile": bool(profile.jit_compile)}


class _build_scope:
    """Build models inside the strategy's scope and the profile's dtype policy."""

    def __init__(self, strategy, mixed_precision: bool):
        import tensorflow as tf

        self.strategy = strategy or tf.distribute.get_strategy()
        self.policy = "mixed_float16" if mixed_precision else None

    def __enter__(self):
        self._scope = self.strategy.scope()
        self._scope.__enter__()
        self._previous = keras.config.dtype_policy()
        if self.policy:
            keras.config.set_dtype_policy(self.policy)
        return self

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self._previous)
        return self._scope.__exit__(*exc)


def _release_memory() -> None:
    """Drop Keras' global state before building the next model: a sweep builds
    dozens of models in one process, and without this its memory keeps growing.
    Models built earlier keep working."""
    keras.backend.clear_session(free_memory=True)


PREDICTIONS_FILE = reporting.PREDICTIONS_FILE


def _finish(model, run_dir: Path, run_config: dict, fit_info: dict, test_ds) -> dict:
    """Score the chosen model once on the test split; store record and predictions."""
    predictions = evaluation.predict(model, test_ds)
    np.savez(run_dir / PREDICTIONS_FILE, labels=predictions.labels, logits=predictions.logits)
    test = evaluation.metrics_from_predictions(predictions)
    test["params"] = models.count_params(model)
    record = {"config": run_config, **fit_info, "test": test}
    training.save_record(run_dir, record)
    return record


def _loaded(run_dir: Path, record: dict, profile, manifest) -> tuple[keras.Model, dict]:
    """A finished run: its model, and its record with ``run_dir`` (where it lies now)."""
    model = keras.saving.load_model(run_dir / "best.keras", compile=False)
    if not (run_dir / PREDICTIONS_FILE).is_file():  # runs recorded before predictions were kept
        manifest = manifest or load_manifest(profile)
        predictions = evaluation.predict(model, datasets(profile, manifest)[2])
        np.savez(run_dir / PREDICTIONS_FILE, labels=predictions.labels, logits=predictions.logits)
    return model, {**record, "run_dir": str(run_dir)}


def train_teacher(profile: config.Profile, manifest: data.Manifest, run_dir=None, verbose: int = 2, strategy=None):
    """Train (or load, when done) the ResNet50 teacher; returns ``(model, record)``.

    The teacher is trained once, with ``profile.seed``: every student of every
    seed distils from this same teacher.
    """
    run_dir = Path(run_dir or config.artifacts_dir(profile) / "teacher")
    accel = accelerator_options(profile)
    run_config = {
        "model": "ResNet50 teacher",
        "profile": profile.name,
        "image_size": profile.image_size,
        "weights": profile.weights,
        "epochs": profile.teacher_epochs,
        "batch_size": profile.batch_size,
        "learning_rate": profile.lr_backbone,
        "seed": profile.seed,
        "data": manifest.info,
        **accel,
    }
    done = training.load_or_prepare(run_dir, run_config)
    if done:
        return _loaded(run_dir, done, profile, manifest)
    _release_memory()
    training.set_seeds(profile.seed)
    train_ds, val_ds, test_ds = datasets(profile, manifest)
    with _build_scope(strategy, accel.get("mixed_precision", False)):
        teacher = models.build_teacher(profile.image_size, weights=profile.weights)
        _classifier_compile(teacher, profile.lr_backbone, **accel)
    fit_info = training.fit(teacher, train_ds, val_ds, profile.teacher_epochs, run_dir, verbose=verbose)
    return teacher, {**_finish(teacher, run_dir, run_config, fit_info, test_ds), "run_dir": str(run_dir)}


SOFT_LOSSES = {"ce": "CategoricalCrossentropy", "kl": "SoftKLDivergence"}


def student_run_dir(profile, student, temperature, alpha, batch_size, scale_by_t2=False, soft_loss="ce",
                    seed=None) -> Path:
    """``artifacts/<profile>/students/<student>_T<T>_a<alpha>_b<batch>[_t2][_kl]_s<seed>``;
    a run without the teacher (alpha = 1) is ``<student>_nokd_b<batch>_s<seed>``."""
    seed = profile.seeds[0] if seed is None else int(seed)
    if float(alpha) >= 1.0:
        name = f"{student.lower()}_nokd_b{int(batch_size)}"
    else:
        name = f"{student.lower()}_T{float(temperature):g}_a{float(alpha):g}_b{int(batch_size)}"
        name += ("_t2" if scale_by_t2 else "") + ("_kl" if soft_loss == "kl" else "")
    return config.artifacts_dir(profile) / "students" / f"{name}_s{seed}"


def distill_student(
    profile: config.Profile,
    manifest: data.Manifest,
    teacher: keras.Model,
    student: str = "DSNet",
    *,
    temperature: float | None = None,
    alpha: float | None = None,
    batch_size: int | None = None,
    scale_by_t2: bool = False,
    soft_loss: str = "ce",
    seed: int | None = None,
    run_dir=None,
    verbose: int = 2,
    strategy=None,
):
    """Distil ``student`` from ``teacher`` (or load it when done); returns ``(model, record)``.

    ``alpha = 1`` keeps only the hard-label term: the same student, loop and
    budget without the teacher (the no-distillation baseline). ``soft_loss``
    is ``"ce"`` (the paper) or ``"kl"``; ``seed`` (default: the profile's
    first) sets the initial weights and the batch order. ``strategy`` is a
    ``tf.distribute.Strategy`` (e.g. ``MirroredStrategy`` over several GPUs);
    the models are built and compiled in its scope.
    """
    alpha = profile.alpha if alpha is None else float(alpha)
    no_kd = alpha >= 1.0
    temperature = 1.0 if no_kd else (profile.temperature if temperature is None else float(temperature))
    scale_by_t2 = bool(scale_by_t2) and not no_kd
    if soft_loss not in SOFT_LOSSES:
        raise ValueError(f"soft_loss must be one of {sorted(SOFT_LOSSES)}, got {soft_loss!r}.")
    soft_loss = "ce" if no_kd else soft_loss
    seed = profile.seeds[0] if seed is None else int(seed)
    batch_size = batch_size or profile.batch_size
    is_dsnet = student.lower() == "dsnet"
    lr = profile.lr_dsnet if is_dsnet else profile.lr_backbone
    epochs = profile.student_epochs if is_dsnet else profile.backbone_student_epochs
    run_dir = Path(run_dir or student_run_dir(profile, student, temperature, alpha, batch_size, scale_by_t2,
                                              soft_loss, seed))
    accel = accelerator_options(profile)
    run_config = {
        "model": f"{student} " + ("without teacher" if no_kd else "distilled"),
        "student": student,
        "profile": profile.name,
        "image_size": profile.image_size,
        "weights": None if is_dsnet else profile.weights,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "seed": seed,
        "alpha": alpha,
        "temperature": None if no_kd else temperature,
        "scale_by_t2": scale_by_t2,
        "soft_loss": soft_loss,
        "data": manifest.info,
        **accel,
    }
    done = training.load_or_prepare(run_dir, run_config)
    if done:
        return _loaded(run_dir, done, profile, manifest)
    _release_memory()
    training.set_seeds(seed)
    train_ds, val_ds, test_ds = datasets(profile, manifest, batch_size, teacher=teacher)
    with _build_scope(strategy, accel.get("mixed_precision", False)):
        model = models.build_student(student, profile.image_size, weights=run_config["weights"])
        distiller = Distiller(student=model, teacher=teacher)
        distiller.compile(
            optimizer=_optimizer(lr, accel.get("mixed_precision", False)),
            metrics=[keras.metrics.CategoricalAccuracy()],
            distillation_loss_fn=SoftKLDivergence() if soft_loss == "kl" else None,
            alpha=alpha,
            temperature=temperature,
            scale_by_t2=scale_by_t2,
            **({"jit_compile": accel["jit_compile"]} if accel else {}),
        )
    fit_info = training.fit(distiller, train_ds, val_ds, epochs, run_dir, verbose=verbose)
    fit_info["loss"] = distiller.loss_config()
    return model, {**_finish(model, run_dir, run_config, fit_info, test_ds), "run_dir": str(run_dir)}


def repeat(profile, manifest, teacher, student="DSNet", *, seeds=None, verbose=0, **options) -> list[dict]:
    """:func:`distill_student` once per seed of the profile; the records, in seed order."""
    return [distill_student(profile, manifest, teacher, student, seed=s, verbose=verbose, **options)[1]
            for s in (profile.seeds if seeds is None else seeds)]


def summary_line(name: str, record: dict) -> str:
    test = record["test"]
    mal, ben = test["per_class"]["malignant"], test["per_class"]["benign"]
    return (
        f"{name:<22} acc {test['accuracy']:.3f}  AUC {test['auc'].get('malignant', float('nan')):.3f}  "
        f"malignant P/R/F1 {mal['precision']:.2f}/{mal['recall']:.2f}/{mal['f1']:.2f}  "
        f"benign P/R/F1 {ben['precision']:.2f}/{ben['recall']:.2f}/{ben['f1']:.2f}  "
        f"params {test['params']['trainable']:,}  train {record['train_seconds']:.0f}s  "
        f"predict {test['prediction_seconds']:.2f}s"
    )


def quickstart(profile_name: str | None = None, **overrides) -> dict:
    """Data -> teacher -> distilled DSNet on the profile; prints the test metrics."""
    profile = config.get_profile(profile_name, **overrides)
    start = time.perf_counter()
    print(f"Profile {profile.name}: {profile.data_source} data at {profile.image_size}px, "
          f"weights={profile.weights}, teacher {profile.teacher_epochs} / student {profile.student_epochs} epochs")
    manifest = prepare_data(profile)
    print(f"Data ({manifest.source}, {manifest.info['root']}):\n{manifest.counts()}")
    excluded = (manifest.report.status == "excluded").sum()
    print(f"Validation report: {len(manifest.report)} entries, {excluded} excluded")
    teacher, teacher_record = train_teacher(profile, manifest)
    student, student_record = distill_student(profile, manifest, teacher)
    print("\nTest split (" + f"{manifest.counts().loc['test', 'total']} images):")
    print(summary_line("Teacher ResNet50", teacher_record))
    print(summary_line(f"DSNet (KD, T={profile.temperature:g})", student_record))
    print(f"Artifacts: {config.artifacts_dir(profile)}   total {time.perf_counter() - start:.0f}s")
    return {"teacher": teacher_record, "dsnet": student_record}


# --------------------------------------------------------------------------- notebook steps


class MissingStepError(FileNotFoundError):
    """An earlier notebook's output is missing; the message names the notebook."""


def _require(path: Path, notebook: str, profile: config.Profile) -> Path:
    if not Path(path).exists():
        raise MissingStepError(
            f"{path} is missing: run notebooks/{notebook}.ipynb first with profile {profile.name!r} "
            f"(or `python -m kd_utils reproduce --profile {profile.name}`)."
        )
    return Path(path)


def load_manifest(profile: config.Profile) -> data.Manifest:
    """The manifest written by notebook 01."""
    folder = config.artifacts_dir(profile) / "data"
    _require(folder / "manifest.csv", "01_data_preparation", profile)
    return data.Manifest.load(folder)


def load_teacher(profile: config.Profile):
    """``(teacher, record)`` written by notebook 02."""
    run_dir = config.artifacts_dir(profile) / "teacher"
    record = reporting.load_record(_require(run_dir / "record.json", "02_teacher_resnet50", profile))
    return _loaded(run_dir, record, profile, None)


def sweep(profile, manifest, teacher, *, temperatures=None, batch_sizes=None, alphas=None, student="DSNet",
          temperature=None, alpha=None, verbose=0):
    """DSNet for each temperature (Table 1), batch size (Table 6) or alpha, every seed.

    Returns ``{value: [record per seed]}``; each run is skipped when already
    done. ``temperature`` / ``alpha`` fix the other knob (default: the profile's).
    """
    records = {}
    for t in temperatures or ():
        records[float(t)] = repeat(profile, manifest, teacher, student, temperature=t, alpha=alpha, verbose=verbose)
    for b in batch_sizes or ():
        records[int(b)] = repeat(profile, manifest, teacher, student, batch_size=b, temperature=temperature,
                                 alpha=alpha, verbose=verbose)
    for a in alphas or ():
        records[float(a)] = repeat(profile, manifest, teacher, student, alpha=a, temperature=temperature,
                                   verbose=verbose)
    return records


def mean_val_accuracy(runs) -> float:
    return float(np.mean([r["best_val_accuracy"] for r in reporting.runs_of(runs)]))


def choose_on_validation(records: dict):
    """The key whose runs had the best mean validation accuracy (ties: the first).

    ``records`` maps a value to a record or to a list of records (one per seed).
    The test split plays no part.
    """
    keys = list(records)
    return max(keys, key=lambda k: (mean_val_accuracy(records[k]), -keys.index(k)))


def save_choice(profile: config.Profile, name: str, value) -> Path:
    path = config.artifacts_dir(profile) / f"chosen_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: value, "chosen_on": "mean validation accuracy over seeds"}))
    return path


def load_choice(profile: config.Profile, name: str, notebook: str = "04_temperature_sweep"):
    path = _require(config.artifacts_dir(profile) / f"chosen_{name}.json", notebook, profile)
    return reporting.load_record(path)[name]


def chosen_settings(profile: config.Profile) -> dict:
    """``{"temperature": T, "alpha": alpha}`` chosen on validation by notebook 04."""
    return {"temperature": load_choice(profile, "temperature"), "alpha": load_choice(profile, "alpha")}


def load_student(profile, student="DSNet", *, temperature=None, alpha=None, batch_size=None, seed=None,
                 scale_by_t2=False, soft_loss="ce", notebook="03_distill_dsnet"):
    """``(model, record)`` of a distillation run an earlier notebook finished."""
    temperature = profile.temperature if temperature is None else temperature
    alpha = profile.alpha if alpha is None else alpha
    if float(alpha) >= 1.0:
        temperature = 1.0
    run_dir = student_run_dir(profile, student, temperature, alpha, batch_size or profile.batch_size,
                              scale_by_t2, soft_loss, seed)
    record = reporting.load_record(_require(run_dir / "record.json", notebook, profile))
    return keras.saving.load_model(run_dir / "best.keras", compile=False), {**record, "run_dir": str(run_dir)}


def final_student_path(profile: config.Profile, student: str = "DSNet") -> Path:
    """The ``.keras`` file of the student to deploy: the temperature and alpha
    chosen on validation (notebook 04) and, of its seeds, the one with the
    best validation accuracy."""
    chosen = chosen_settings(profile)
    records = {}
    for seed in profile.seeds:
        run_dir = student_run_dir(profile, student, chosen["temperature"], chosen["alpha"], profile.batch_size,
                                  seed=seed)
        if (run_dir / "record.json").is_file():
            records[run_dir] = reporting.load_record(run_dir / "record.json")
    if not records:
        raise MissingStepError(
            f"No finished {student} run at T={chosen['temperature']:g}, alpha={chosen['alpha']:g} in "
            f"{config.artifacts_dir(profile) / 'students'}: run notebooks/04_temperature_sweep.ipynb with profile "
            f"{profile.name!r} (or `python -m kd_utils reproduce --profile {profile.name}`)."
        )
    return choose_on_validation(records) / "best.keras"
