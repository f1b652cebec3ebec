"""One run's identity and bookkeeping: its key and folder, how its model is
built and compiled, and what is stored when it ends.

A run (the teacher, its pretraining, or one student at one setting and
seed) is identified by its key: a hash of its configuration
(:func:`teacher_run`, :func:`student_run`, :func:`pretrain_run`), the key
of the teacher run it distils from and the content hash of the data
manifest. Its folder ``artifacts/<profile>/runs/<name>-<key>`` is derived
from the key (:func:`run_folder`). :func:`finish` scores the chosen model
once on the test split and writes its predictions and then its record
(:mod:`kd_utils.training` checks both when the run is asked for again).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from .. import batches, config, data, evaluation, models, paths, reporting, storage, training


TEACHER_CONTROLS = ("uniform", "shuffled")


def teacher_key(teacher) -> str:
    """What identifies a teacher in its students' run keys: the key of the run
    that trained it, else (a model from elsewhere) a hash of its weights."""
    key = getattr(teacher, "kd_run_key", None)
    if key:
        return key
    import hashlib

    digest = hashlib.sha256()
    for w in teacher.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return "weights-" + digest.hexdigest()[:16]


def compile_classifier(model: keras.Model, learning_rate: float, accumulation_steps: int = 1, **compile_args) -> None:
    model.compile(
        optimizer=optimizer(learning_rate, compile_args.pop("mixed_precision", False), accumulation_steps),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy()],
        **compile_args,
    )


def optimizer(learning_rate: float, mixed_precision: bool, accumulation_steps: int = 1,
              weight_average: float | None = None):
    """Adam; with ``accumulation_steps`` > 1 it averages that many micro-batches'
    gradients before each update (:mod:`kd_utils.experiments.memory`); with
    ``weight_average`` (a momentum) it keeps a running average of the weights,
    which :func:`kd_utils.training.fit` validates and keeps."""
    # Keras moves the average at every micro-batch, the weights only at every
    # ``accumulation_steps``-th: the momentum per micro-batch keeps it per update.
    average = ({"use_ema": True, "ema_momentum": weight_average ** (1 / accumulation_steps)}
               if weight_average is not None else {})
    adam = keras.optimizers.Adam(learning_rate, gradient_accumulation_steps=accumulation_steps
                                 if accumulation_steps > 1 else None, **average)
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


def execution_options(profile: config.Profile) -> dict:
    """``{"run_eagerly": True}`` for a profile that runs its steps eagerly, else
    ``{}``: compile arguments, and part of the run's recorded configuration."""
    return {"run_eagerly": True} if profile.run_eagerly else {}


class build_scope:
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


def release_memory() -> None:
    """Drop Keras' global state before building the next model: a sweep builds
    dozens of models in one process, and without this its memory keeps growing.
    Models built earlier keep working."""
    keras.backend.clear_session(free_memory=True)



#: Bumped when what decides a run's result changes in the code (not in its
#: configuration), so that runs of older code are not reused.
RUN_FORMAT = 2


def run_folder(profile: config.Profile, name: str, run_config: dict, manifest_hash: str, teacher: str | None = None):
    """``(key, folder)`` of a run: the key hashes the configuration, the teacher
    run's key and the manifest's content hash; the folder is derived from it."""
    key = training.run_key({"format": RUN_FORMAT, "config": run_config, "manifest": manifest_hash,
                            "teacher": teacher})
    return key, paths.artifacts_dir(profile) / "runs" / f"{name}-{key}"


#: Added to the profile's seed to draw a teacher's pretraining images
#: (:attr:`~kd_utils.config.Profile.teacher_pretrain_per_class`): another
#: generator seed, so none of them is an image of the profile's own splits.
PRETRAIN_SEED_OFFSET = 100_000


#: The pretraining set's validation and test shares (of all its images);
#: the rest, 80%, trains.
PRETRAIN_VAL_SHARE, PRETRAIN_TEST_SHARE = 0.1, 0.1


def pretraining_data(profile: config.Profile) -> data.Manifest:
    """The generated images the profile's teacher is pretrained on (a stand-in
    for ImageNet, see :func:`pretrain_teacher`): ``teacher_pretrain_per_class``
    per class from the synthetic generator with another seed, split 80/10/10
    (validation chooses the epoch; test is reported only). Built once, stored
    in the artifacts folder like the profile's own manifest."""
    seed = PRETRAIN_SEED_OFFSET + profile.seed
    n = profile.teacher_pretrain_per_class
    name = f"{profile.teacher_size}px-{n}x2-seed{seed}"
    folder = paths.artifacts_dir(profile) / f"pretraining-data-{name}"
    if (folder / "manifest.csv").is_file():
        try:
            return data.Manifest.load(folder)
        except data.DataError as err:
            storage.notice(f"{err} Rebuilding it now.")
    manifest = data.build_manifest(
        "synthetic", paths.data_dir() / f"synthetic-{name}",
        image_size=profile.teacher_size, seed=seed, val_fraction=PRETRAIN_VAL_SHARE / (1 - PRETRAIN_TEST_SHARE),
        test_fraction=PRETRAIN_TEST_SHARE,
        synthetic_per_class=n, work_dir=folder / "converted")
    manifest.save(folder)
    return manifest


#: How a model trained on augmented views sees its training images, in its run's configuration.
TEACHER_AUGMENT = "dihedral (flips and 90-degree turns), every epoch"


ROBUST_AUGMENT = "robust views (batches.robust_view, the numbers under views), every epoch"


#: What a profile with ``color_constancy`` puts first in every model, in its runs' configuration.
COLOR_CONSTANCY = "Shades of Gray, p = 6"


def teacher_augment(profile: config.Profile) -> str | None:
    """The views the profile's teacher trains on (:data:`kd_utils.batches.AUGMENTATIONS`)."""
    return "robust" if profile.robust_teacher else ("dihedral" if profile.teacher_augment else None)


def view_config(augment: str | None, profile: config.Profile) -> dict:
    """What a run's configuration (and so its key) says about its views and colour
    constancy: nothing when both are off, so runs without them keep their keys."""
    described = {None: None, "dihedral": TEACHER_AUGMENT, "robust": ROBUST_AUGMENT}[augment]
    # The robust views' numbers themselves, not only their description: a change to
    # batches.ROBUST gives new keys, so runs trained on other views are not reused.
    views = {k: list(v) if isinstance(v, tuple) else v for k, v in batches.ROBUST.items()
             if k not in batches.ROBUST_NEUTRAL or tuple(v) != batches.ROBUST_NEUTRAL[k]}
    return {**({"augment": described} if described else {}),
            **({"views": views} if augment == "robust" else {}),
            **({"color_constancy": COLOR_CONSTANCY} if profile.color_constancy else {})}


def pretrain_run(profile: config.Profile, manifest_hash: str):
    """``(key, folder, config)`` of the teacher's pretraining run."""
    run_config = {
        "model": "ResNet50 teacher, pretraining on generated images",
        "profile": profile.name,
        "image_size": profile.teacher_size,
        "images_per_class": profile.teacher_pretrain_per_class,
        "generator_seed": PRETRAIN_SEED_OFFSET + profile.seed,
        "epochs": profile.teacher_pretrain_epochs,
        "batch_size": profile.batch_size,
        "learning_rate": profile.lr_backbone,
        "learning_rate_schedule": "cosine decay to 0 over the run",
        "bn_momentum": profile.teacher_bn_momentum,
        "seed": profile.seed,
        **view_config(teacher_augment(profile), profile),
        **accelerator_options(profile),
        **execution_options(profile),
    }
    return (*run_folder(profile, "teacher-pretrain", run_config, manifest_hash), run_config)


def teacher_run(profile: config.Profile, manifest_hash: str, pretraining_hash: str | None = None):
    """``(key, folder, config)`` of the profile's teacher run (its key covers
    the pretraining run's, when the profile pretrains; ``pretraining_hash``:
    that run's data, default :func:`pretraining_data`'s)."""
    pretrained = profile.teacher_pretrain_per_class > 0
    run_config = {
        "model": "ResNet50 teacher",
        "profile": profile.name,
        "image_size": profile.teacher_size,
        "weights": profile.weights,
        "epochs": profile.teacher_epochs,
        "batch_size": profile.batch_size,
        "learning_rate": (profile.teacher_finetune_lr or profile.lr_backbone) if pretrained else profile.lr_backbone,
        "seed": profile.seed,
        **accelerator_options(profile),
        **execution_options(profile),
    }
    if profile.teacher_bn_momentum is not None:
        run_config["bn_momentum"] = profile.teacher_bn_momentum
    run_config.update(view_config(teacher_augment(profile), profile))
    if pretrained:
        run_config["pretrained_from"] = pretrain_run(
            profile, pretraining_hash or pretraining_data(profile).content_hash)[0]
    return (*run_folder(profile, "teacher-resnet50", run_config, manifest_hash), run_config)


SOFT_LOSSES = {"ce": "CategoricalCrossentropy", "kl": "SoftKLDivergence"}


def student_run(profile, manifest_hash, teacher, student="DSNet", *, temperature=None, alpha=None,
                 batch_size=None, scale_by_t2=False, soft_loss="ce", seed=None, teacher_control=None, robust=None):
    """``(key, folder, config)`` of one student run; ``teacher`` is the teacher's key.

    ``alpha = 1`` is the run without the teacher (the no-distillation baseline);
    its temperature and soft loss play no part. The folder's readable name is
    ``<student>_T<T>_a<alpha>_b<batch>[_t2][_kl][_uniform|_shuffled]_s<seed>``
    (``<student>_nokd_b<batch>_s<seed>``), followed by ``-<key>``.
    """
    alpha = profile.alpha if alpha is None else float(alpha)
    no_kd = alpha >= 1.0
    temperature = 1.0 if no_kd else (profile.temperature if temperature is None else float(temperature))
    # At T = 1 the T^2 factor is 1: both loss forms are the same run.
    scale_by_t2 = bool(scale_by_t2) and not no_kd and temperature != 1.0
    if soft_loss not in SOFT_LOSSES:
        raise ValueError(f"soft_loss must be one of {sorted(SOFT_LOSSES)}, got {soft_loss!r}.")
    soft_loss = "ce" if no_kd else soft_loss
    if teacher_control is not None and teacher_control not in TEACHER_CONTROLS:
        raise ValueError(f"teacher_control must be one of {TEACHER_CONTROLS} or None, got {teacher_control!r}.")
    teacher_control = None if no_kd else teacher_control
    seed = profile.seeds[0] if seed is None else int(seed)
    batch_size = int(batch_size or profile.batch_size)
    is_dsnet = student.lower() == "dsnet"
    kind = "without teacher" if no_kd else (f"with a {teacher_control} teacher" if teacher_control else "distilled")
    run_config = {
        "model": f"{student} {kind}",
        "student": student,
        "profile": profile.name,
        "image_size": profile.image_size,
        "weights": None if is_dsnet else profile.weights,
        "epochs": profile.student_epochs if is_dsnet else profile.backbone_student_epochs,
        "batch_size": batch_size,
        "learning_rate": profile.lr_dsnet if is_dsnet else profile.lr_backbone,
        "seed": seed,
        "data_seed": profile.seed,
        "alpha": alpha,
        "temperature": None if no_kd else temperature,
        "scale_by_t2": scale_by_t2,
        "soft_loss": soft_loss,
        "teacher_control": teacher_control,
        # Only when set: the runs of profiles without it keep their keys.
        **({"patience": profile.student_patience} if profile.student_patience else {}),
        **({"weight_average": profile.student_weight_average} if profile.student_weight_average else {}),
        **view_config("robust" if (profile.robust_students if robust is None else robust) else None, profile),
        **accelerator_options(profile),
        **execution_options(profile),
    }
    if no_kd:
        name = f"{student.lower()}_nokd_b{batch_size}"
    else:
        name = f"{student.lower()}_T{temperature:g}_a{alpha:g}_b{batch_size}"
        name += ("_t2" if scale_by_t2 else "") + ("_kl" if soft_loss == "kl" else "")
        name += f"_{teacher_control}" if teacher_control else ""
    # Without the teacher the run does not depend on it: one baseline serves every teacher.
    return (*run_folder(profile, f"{name}_s{seed}", run_config, manifest_hash, None if no_kd else teacher), run_config)


def save_predictions(run_dir: Path, predictions) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, labels=predictions.labels, logits=predictions.logits)

    storage.atomic_write(run_dir / reporting.PREDICTIONS_FILE, write)


def finish(model, run_dir: Path, key: str, run_config: dict, manifest, fit_info: dict, test_ds,
            teacher: str | None = None, teacher_test_logits=None) -> dict:
    """Score the chosen model once on the test split; store predictions, then the record.
    With the teacher's test logits the record also holds the student's fidelity to it."""
    predictions = evaluation.predict(model, test_ds)
    save_predictions(run_dir, predictions)
    test = evaluation.metrics_from_predictions(predictions)
    test["params"] = models.count_params(model)
    if teacher_test_logits is not None:
        test["fidelity"] = evaluation.fidelity(predictions.logits, teacher_test_logits)
    record = {"config": run_config, "teacher_key": teacher, "manifest_hash": manifest.content_hash,
              "data": manifest.info, **fit_info, "test": test}
    training.save_record(run_dir, record, key)
    return {**record, "key": key, "run_dir": str(run_dir)}


def config_file(key, run_config, teacher, manifest_hash) -> dict:
    """What ``config.json`` in a run folder holds: what its key was computed from."""
    return {"key": key, "config": run_config, "teacher_key": teacher, "manifest_hash": manifest_hash}


def mark(model: keras.Model, key: str, run_dir: Path) -> keras.Model:
    """Let a teacher model carry its run's key (for its students' keys) and folder (logit cache)."""
    model.kd_run_key, model.kd_run_dir = key, str(run_dir)
    return model
