"""The paper's steps as functions of a profile: data, teacher, distilled student.

Notebooks and the command line call these, so a step behaves the same
wherever it runs. Each training step is a run with a key (a hash of its
configuration, its teacher run's key and the manifest's content hash) and a
folder ``artifacts/<profile>/runs/<name>-<key>`` derived from it (see
:mod:`kd_utils.training`). A run is skipped when a finished record with the
same key is there; a changed teacher or changed data makes new runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from . import batches, config, data, evaluation, memory, models, reporting, shard, storage, training
from .distillation import Distiller, SoftKLDivergence


def prepare_data(profile: config.Profile, root=None, rebuild: bool = False) -> data.Manifest:
    """The profile's validated manifest, built once and stored in the artifacts folder.

    A saved manifest whose split (``profile.split``: the dataset's own
    folders kept, or pooled and re-split) is not the profile's is rebuilt.
    A profile on stand-ins (``paper-dry-run``) gets its images and weights files first.
    """
    if profile.stand_ins:
        from . import dry_run

        dry_run.ensure(profile)
    elif root is None:
        from . import download

        download.ensure_data(profile)  # real images missing on this machine (a fresh Colab one): fetch them
    folder = config.artifacts_dir(profile) / "data"
    if not rebuild and (folder / "manifest.csv").is_file():
        try:
            saved = data.Manifest.load(folder)
        except data.DataError as err:
            storage.notice(f"{err} Rebuilding it now.")
        else:
            used = saved.split_mode
            if used is None or used == profile.split:
                return saved
            storage.notice(f"The saved manifest in {folder} uses split {used!r}, the profile {profile.name!r} "
                           f"asks for {profile.split!r}. Rebuilding it now.")
    manifest = data.build_manifest(
        profile.data_source,
        root or profile.data_root,
        image_size=profile.image_size,
        seed=profile.seed,
        val_fraction=profile.val_fraction,
        test_fraction=profile.test_fraction,
        synthetic_per_class=profile.synthetic_per_class,
        work_dir=folder / "converted",
        remove_test_duplicates=profile.remove_test_duplicates,
        split=profile.split,
    )
    manifest.save(folder)
    return manifest


TEACHER_CONTROLS = ("uniform", "shuffled")


def control_logits(logits: np.ndarray, control: str | None, seed: int) -> np.ndarray:
    """Teacher logits for a control run that keeps the loss but removes the
    teacher's knowledge: ``"uniform"`` - all zeros, so the soft targets are
    0.5 / 0.5 at any T (pure label smoothing); ``"shuffled"`` - the real
    teacher's logits, each given to another image (a seeded permutation)."""
    if control is None:
        return logits
    if control == "uniform":
        return np.zeros_like(logits)
    if control == "shuffled":
        return logits[np.random.default_rng(seed).permutation(len(logits))]
    raise ValueError(f"teacher_control must be one of {TEACHER_CONTROLS} or None, got {control!r}.")


def datasets(profile: config.Profile, manifest: data.Manifest, batch_size: int | None = None, teacher=None,
             teacher_control: str | None = None, augment: str | None = None):
    """``(train, val, test)`` tf.data pipelines at the profile's image size.

    ``train`` is an :class:`~kd_utils.batches.EpochDataset` (``train.for_epoch(k)``):
    each epoch's order depends on the profile's seed and the epoch only, so a
    resumed run sees the same batches. With a ``teacher``, train and
    validation batches carry its precomputed logits (inputs are not
    augmented, so they are the same every epoch): the teacher runs once per
    split instead of once per epoch and run. ``teacher_control`` replaces
    those logits by a control's (:func:`control_logits`). ``augment``
    (``"dihedral"`` or ``"robust"``, :data:`kd_utils.batches.AUGMENTATIONS`)
    draws new views of the training images every epoch; the teacher's logits
    stay those of the images as they are.
    """
    batch_size = batch_size or profile.batch_size

    def logits(split):
        if teacher is None or split == "test":
            return None
        seed = profile.seed * 10 + data.SPLITS.index(split)
        return control_logits(teacher_logits(profile, manifest, teacher, split), teacher_control, seed)

    return tuple(
        batches.make_dataset(manifest, split, profile.image_size, batch_size, seed=profile.seed, per_epoch=True,
                          teacher_logits=logits(split), augment=augment if split == "train" else None)
        for split in data.SPLITS
    )


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


_LOGITS_CACHE: dict = {}


def teacher_logits(profile: config.Profile, manifest: data.Manifest, teacher, split: str):
    """The teacher's logits for every image of ``split``, in manifest order,
    each image at the teacher's size (:attr:`~kd_utils.config.Profile.teacher_size`).

    Cached by the teacher's key and the manifest's content hash, never by
    anything that two different teachers or datasets could share: in memory,
    and on disk in the teacher's run folder when it has one.
    """
    size = profile.teacher_size
    key = (teacher_key(teacher), manifest.content_hash, size, split)
    if key in _LOGITS_CACHE:
        return _LOGITS_CACHE[key]
    run_dir = getattr(teacher, "kd_run_dir", None)
    path = Path(run_dir) / "logits" / f"{manifest.content_hash[:16]}-{size}px-{split}.npy" if run_dir else None
    n = len(manifest.split(split))
    logits = None
    if path is not None and path.is_file():
        digest = path.with_suffix(".sha256")
        try:
            if not digest.is_file() or digest.read_text().strip() != storage.sha256_file(path):
                raise ValueError("its checksum differs")
            logits = np.load(path)
        except Exception:  # noqa: BLE001 - whatever is wrong with it, it is not used
            logits = None
        if logits is None or logits.shape != (n, 2):
            storage.notice(f"{path} is damaged; the teacher's logits are computed again.")
            logits = None
    if logits is None:
        ordered = batches.make_dataset(manifest, split, size, 128, shuffle=False, cache=False)
        teacher.run_eagerly = teacher.run_eagerly or profile.run_eagerly
        logits = evaluation.predict(teacher, ordered).logits.astype("float32")
        if path is not None:
            storage.atomic_write(path, lambda tmp: np.save(tmp, logits))
            storage.write_text(path.with_suffix(".sha256"), storage.sha256_file(path) + "\n")
    _LOGITS_CACHE[key] = logits
    return logits


def _classifier_compile(model: keras.Model, learning_rate: float, accumulation_steps: int = 1, **compile_args) -> None:
    model.compile(
        optimizer=_optimizer(learning_rate, compile_args.pop("mixed_precision", False), accumulation_steps),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy()],
        **compile_args,
    )


def _optimizer(learning_rate: float, mixed_precision: bool, accumulation_steps: int = 1):
    """Adam; with ``accumulation_steps`` > 1 it averages that many micro-batches'
    gradients before each update (:mod:`kd_utils.memory`)."""
    adam = keras.optimizers.Adam(learning_rate, gradient_accumulation_steps=accumulation_steps
                                 if accumulation_steps > 1 else None)
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
#: Bumped when what decides a run's result changes in the code (not in its
#: configuration), so that runs of older code are not reused.
RUN_FORMAT = 2


def _run(profile: config.Profile, name: str, run_config: dict, manifest_hash: str, teacher: str | None = None):
    """``(key, folder)`` of a run: the key hashes the configuration, the teacher
    run's key and the manifest's content hash; the folder is derived from it."""
    key = training.run_key({"format": RUN_FORMAT, "config": run_config, "manifest": manifest_hash,
                            "teacher": teacher})
    return key, config.artifacts_dir(profile) / "runs" / f"{name}-{key}"


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
    folder = config.artifacts_dir(profile) / f"pretraining-data-{name}"
    if (folder / "manifest.csv").is_file():
        try:
            return data.Manifest.load(folder)
        except data.DataError as err:
            storage.notice(f"{err} Rebuilding it now.")
    manifest = data.build_manifest(
        "synthetic", config.data_dir() / f"synthetic-{name}",
        image_size=profile.teacher_size, seed=seed, val_fraction=PRETRAIN_VAL_SHARE / (1 - PRETRAIN_TEST_SHARE),
        test_fraction=PRETRAIN_TEST_SHARE,
        synthetic_per_class=n, work_dir=folder / "converted")
    manifest.save(folder)
    return manifest


#: How a model trained on augmented views sees its training images, in its run's configuration.
TEACHER_AUGMENT = "dihedral (flips and 90-degree turns), every epoch"
ROBUST_AUGMENT = ("robust views (symmetries, zoom 0.75-1.33, black field or dark corners 25% each, "
                  "intensity/contrast x0.8-1.2, hue +-0.04), every epoch")
#: What a profile with ``color_constancy`` puts first in every model, in its runs' configuration.
COLOR_CONSTANCY = "Shades of Gray, p = 6"


def teacher_augment(profile: config.Profile) -> str | None:
    """The views the profile's teacher trains on (:data:`kd_utils.batches.AUGMENTATIONS`)."""
    return "robust" if profile.robust_teacher else ("dihedral" if profile.teacher_augment else None)


def _view_config(augment: str | None, profile: config.Profile) -> dict:
    """What a run's configuration (and so its key) says about its views and colour
    constancy: nothing when both are off, so runs without them keep their keys."""
    described = {None: None, "dihedral": TEACHER_AUGMENT, "robust": ROBUST_AUGMENT}[augment]
    return {**({"augment": described} if described else {}),
            **({"color_constancy": COLOR_CONSTANCY} if profile.color_constancy else {})}


def _pretrain_run(profile: config.Profile, manifest_hash: str):
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
        **_view_config(teacher_augment(profile), profile),
        **accelerator_options(profile),
        **execution_options(profile),
    }
    return (*_run(profile, "teacher-pretrain", run_config, manifest_hash), run_config)


def _teacher_run(profile: config.Profile, manifest_hash: str, pretraining_hash: str | None = None):
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
    run_config.update(_view_config(teacher_augment(profile), profile))
    if pretrained:
        run_config["pretrained_from"] = _pretrain_run(
            profile, pretraining_hash or pretraining_data(profile).content_hash)[0]
    return (*_run(profile, "teacher-resnet50", run_config, manifest_hash), run_config)


SOFT_LOSSES = {"ce": "CategoricalCrossentropy", "kl": "SoftKLDivergence"}


def _student_run(profile, manifest_hash, teacher, student="DSNet", *, temperature=None, alpha=None,
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
        **_view_config("robust" if (profile.robust_students if robust is None else robust) else None, profile),
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
    return (*_run(profile, f"{name}_s{seed}", run_config, manifest_hash, None if no_kd else teacher), run_config)


def _save_predictions(run_dir: Path, predictions) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, labels=predictions.labels, logits=predictions.logits)

    storage.atomic_write(run_dir / PREDICTIONS_FILE, write)


def _finish(model, run_dir: Path, key: str, run_config: dict, manifest, fit_info: dict, test_ds,
            teacher: str | None = None, teacher_test_logits=None) -> dict:
    """Score the chosen model once on the test split; store predictions, then the record.
    With the teacher's test logits the record also holds the student's fidelity to it."""
    predictions = evaluation.predict(model, test_ds)
    _save_predictions(run_dir, predictions)
    test = evaluation.metrics_from_predictions(predictions)
    test["params"] = models.count_params(model)
    if teacher_test_logits is not None:
        test["fidelity"] = evaluation.fidelity(predictions.logits, teacher_test_logits)
    record = {"config": run_config, "teacher_key": teacher, "manifest_hash": manifest.content_hash,
              "data": manifest.info, **fit_info, "test": test}
    training.save_record(run_dir, record, key)
    return {**record, "key": key, "run_dir": str(run_dir)}


def _loaded(run_dir: Path, record: dict, profile, manifest) -> tuple[keras.Model, dict]:
    """A finished run: its model, and its record with ``run_dir`` (where it lies now)."""
    model = keras.saving.load_model(run_dir / training.BEST_FILE, compile=False)
    model.run_eagerly = profile.run_eagerly
    if not (run_dir / "config.json").is_file() and "config" in record:  # damaged (load_finished said so)
        storage.write_json(run_dir / "config.json", _config_file(record["key"], record["config"],
                                                                 record.get("teacher_key"), record["manifest_hash"]))
        record = training.rebuilt(run_dir, record, "config.json")
    if not (run_dir / PREDICTIONS_FILE).is_file():
        predictions = evaluation.predict(model, datasets(profile, manifest or load_manifest(profile))[2])
        _save_predictions(run_dir, predictions)
        record = training.rebuilt(run_dir, record, PREDICTIONS_FILE)
    return model, {**record, "run_dir": str(run_dir)}


def _config_file(key, run_config, teacher, manifest_hash) -> dict:
    """What ``config.json`` in a run folder holds: what its key was computed from."""
    return {"key": key, "config": run_config, "teacher_key": teacher, "manifest_hash": manifest_hash}


def _train_or_load(profile, manifest, key, run_dir, run_config, train, teacher=None):
    """The finished run, else ``train()`` under the run's lock, then its record."""
    done = training.load_finished(run_dir, key)
    if done:
        return _loaded(run_dir, done, profile, manifest)
    with storage.RunLock(run_dir) as lock:
        done = training.load_finished(run_dir, key)  # finished by another process meanwhile
        if done:
            return _loaded(run_dir, done, profile, manifest)
        storage.write_json(run_dir / "config.json", _config_file(key, run_config, teacher, manifest.content_hash))
        model, fit_info, test_ds, *teacher_test = train(lock)
        lock.check()
        return model, _finish(model, run_dir, key, run_config, manifest, fit_info, test_ds, teacher, *teacher_test)


def _mark(model: keras.Model, key: str, run_dir: Path) -> keras.Model:
    """Let a teacher model carry its run's key (for its students' keys) and folder (logit cache)."""
    model.kd_run_key, model.kd_run_dir = key, str(run_dir)
    return model


def _new_teacher(profile: config.Profile) -> keras.Model:
    """The paper's teacher, with the profile's batch-norm momentum."""
    teacher = models.build_teacher(profile.teacher_size, weights=profile.weights,
                                   color_constancy=profile.color_constancy)
    if profile.teacher_bn_momentum is not None:
        for layer in teacher._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = profile.teacher_bn_momentum
    return teacher


def _teacher_builder(profile, manifest, strategy, learning_rate, start: dict | None = None):
    """``build(batching)`` for :func:`kd_utils.memory.fit_within_memory`: the
    profile's teacher (with ``start["weights"]`` when given), compiled with
    Adam at ``learning_rate`` (a number or a schedule), and the datasets at
    the micro-batch."""
    accel = accelerator_options(profile)

    def build(batching):
        _release_memory()
        training.set_seeds(profile.seed)
        splits = datasets(profile.teacher_view(), manifest, batching.micro_batch, augment=teacher_augment(profile))
        with _build_scope(strategy, accel.get("mixed_precision", False)):
            teacher = _new_teacher(profile)
            if start:
                teacher.set_weights(start["weights"])
            _classifier_compile(teacher, learning_rate, batching.accumulation_steps, **accel,
                                **execution_options(profile))
        return teacher, splits

    return build


def pretrain_teacher(profile: config.Profile, verbose: int = 2, strategy=None):
    """Pretrain (or load, when done) the teacher on generated images; returns ``(model, record)``.

    The paper's teacher starts from ImageNet weights: it knows about images
    before it sees a lesion. Without network or ImageNet (the ``cpu``
    profile) the stand-in is a ResNet50 trained first on
    :func:`pretraining_data`: many more generated lesions than the profile's
    training split holds, none of them in its splits. The student never sees
    them; what the teacher learns there reaches it only through the soft targets.
    """
    manifest = pretraining_data(profile)
    key, run_dir, run_config = _pretrain_run(profile, manifest.content_hash)
    # Updates over the run (the same with gradient accumulation): the cosine decay's length.
    steps = -(-int(manifest.counts().loc["train", "total"]) // profile.batch_size) * profile.teacher_pretrain_epochs
    build = _teacher_builder(profile, manifest, strategy, keras.optimizers.schedules.CosineDecay(profile.lr_backbone,
                                                                                                steps))

    def train(lock):
        model, splits, fit_info = memory.fit_within_memory(
            build, profile.batch_size, profile.teacher_pretrain_epochs, run_dir, seed=profile.seed, verbose=verbose,
            tensorboard=profile.tensorboard, lock=lock)
        return model, fit_info, splits[2]

    model, record = _train_or_load(profile.teacher_view(), manifest, key, run_dir, run_config, train)
    return _mark(model, key, run_dir), record


def train_teacher(profile: config.Profile, manifest: data.Manifest, verbose: int = 2, strategy=None):
    """Train (or load, when done) the ResNet50 teacher; returns ``(model, record)``.

    The teacher is trained once, with ``profile.seed``: every student of every
    seed distils from this same teacher. A profile with
    ``teacher_pretrain_per_class`` first pretrains it (:func:`pretrain_teacher`)
    and then trains it on the profile's training split at ``teacher_finetune_lr``;
    the record's ``pretraining`` holds that run's key and accuracies.
    """
    key, run_dir, run_config = _teacher_run(profile, manifest.content_hash)
    start = {}  # the pretrained weights, once pretrain_teacher has run
    build = _teacher_builder(profile, manifest, strategy, run_config["learning_rate"], start)

    def train(lock):
        if profile.teacher_pretrain_per_class:
            pretrained, pre_record = pretrain_teacher(profile, verbose=verbose, strategy=strategy)
            start["weights"] = pretrained.get_weights()
        teacher, splits, fit_info = memory.fit_within_memory(
            build, profile.batch_size, profile.teacher_epochs, run_dir, seed=profile.seed, verbose=verbose,
            tensorboard=profile.tensorboard, lock=lock)
        if start:
            fit_info["pretraining"] = {"key": pre_record["key"], "run_dir": pre_record["run_dir"],
                                       "train_images": int(pretraining_data(profile).counts().loc["train", "total"]),
                                       "best_val_accuracy": pre_record["best_val_accuracy"],
                                       "test_accuracy": pre_record["test"]["accuracy"]}
        return teacher, fit_info, splits[2]

    model, record = _train_or_load(profile.teacher_view(), manifest, key, run_dir, run_config, train)
    return _mark(model, key, run_dir), record


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
    teacher_control: str | None = None,
    robust: bool | None = None,
    verbose: int = 2,
    strategy=None,
):
    """Distil ``student`` from ``teacher`` (or load it when done); returns ``(model, record)``.

    ``alpha = 1`` keeps only the hard-label term: the same student, loop and
    budget without the teacher (the no-distillation baseline). ``soft_loss``
    is ``"ce"`` (the paper) or ``"kl"``; ``seed`` (default: the profile's
    first) sets the initial weights and the batch order. ``strategy`` is a
    ``tf.distribute.Strategy`` (e.g. ``MirroredStrategy`` over several GPUs);
    the models are built and compiled in its scope. The teacher's logits are
    computed once and fed with the batches: the Distiller (and so every
    checkpoint) holds the student only. ``teacher_control`` (``"uniform"`` or
    ``"shuffled"``) trains the same student with the same loss on a control's
    soft targets (:func:`control_logits`). Every run with a teacher records
    its fidelity to the real teacher on the test split (top-1 agreement and
    KL at T = 1). ``robust`` (default: the profile's ``robust_students``)
    trains the student on :func:`kd_utils.batches.robust_view` views.
    """
    teacher_id = teacher_key(teacher)
    key, run_dir, run_config = _student_run(
        profile, manifest.content_hash, teacher_id, student, temperature=temperature, alpha=alpha,
        batch_size=batch_size, scale_by_t2=scale_by_t2, soft_loss=soft_loss, seed=seed,
        teacher_control=teacher_control, robust=robust)
    accel = accelerator_options(profile)
    c = run_config

    def build(batching):
        _release_memory()
        training.set_seeds(c["seed"])
        splits = datasets(profile, manifest, batching.micro_batch, teacher=teacher,
                          teacher_control=c["teacher_control"], augment="robust" if "augment" in c else None)
        with _build_scope(strategy, accel.get("mixed_precision", False)):
            model = models.build_student(student, profile.image_size, weights=c["weights"],
                                         color_constancy=profile.color_constancy)
            distiller = Distiller(student=model, teacher=None)
            distiller.compile(
                optimizer=_optimizer(c["learning_rate"], accel.get("mixed_precision", False),
                                     batching.accumulation_steps),
                metrics=[keras.metrics.CategoricalAccuracy()],
                distillation_loss_fn=SoftKLDivergence() if c["soft_loss"] == "kl" else None,
                alpha=c["alpha"],
                temperature=c["temperature"] or 1.0,
                scale_by_t2=c["scale_by_t2"],
                **({"jit_compile": accel["jit_compile"]} if accel else {}),
                **execution_options(profile),
            )
        return distiller, splits

    def train(lock):
        distiller, (_, _, test_ds), fit_info = memory.fit_within_memory(
            build, c["batch_size"], c["epochs"], run_dir, seed=c["seed"], verbose=verbose,
            tensorboard=profile.tensorboard, lock=lock)
        model = distiller.student
        model.run_eagerly = distiller.run_eagerly  # its test predictions, as it was trained
        fit_info["loss"] = distiller.loss_config()
        if c["alpha"] >= 1.0:
            return model, fit_info, test_ds
        return model, fit_info, test_ds, teacher_logits(profile, manifest, teacher, "test")

    return _train_or_load(profile, manifest, key, run_dir, run_config, train,
                          None if c["alpha"] >= 1.0 else teacher_id)


class Progress:
    """One printed line per finished run of a long cell: what it was, its
    accuracy, its time, how many runs are left and about how long they take."""

    def __init__(self, total: int):
        self.total, self.done, self.start = int(total), 0, time.perf_counter()

    def report(self, record: dict, seconds: float) -> None:
        self.done += 1
        c, test = record["config"], record["test"]
        what = c["model"] + ("" if c.get("temperature") is None else f", T={c['temperature']:g}")
        what += "" if c["alpha"] >= 1.0 else f", alpha={c['alpha']:g}"
        what += ", T^2" if c.get("scale_by_t2") else ""
        what += ", KL" if c.get("soft_loss") == "kl" else ""
        left = max(self.total - self.done, 0)
        eta = (time.perf_counter() - self.start) / self.done * left
        print(f"[{self.done}/{self.total}] {what}, batch {c['batch_size']}, seed {c['seed']}: "
              f"test acc {test['accuracy']:.3f} (val {record['best_val_accuracy']:.3f}), {seconds:.0f} s; "
              f"{left} run(s) left, about {eta / 60:.0f} min", flush=True)


def repeat(profile, manifest, teacher, student="DSNet", *, seeds=None, verbose=0, progress: Progress | None = None,
           **options) -> list[dict]:
    """:func:`distill_student` once per seed of the profile; the records, in seed order.

    Prints one line per run (``progress`` shares the count with other calls of a cell).
    With ``KD_SHARD=i/n`` this session trains only its share of the seeds'
    runs and waits for the others' (:mod:`kd_utils.shard`)."""
    seeds = profile.seeds if seeds is None else seeds
    progress = progress or Progress(len(seeds))
    sharded = shard.from_env()
    runs = {} if sharded is None else {  # seed -> (key, folder)
        s: _student_of_profile(profile, manifest, student, teacher, seed=s,
                               **{k: v for k, v in options.items() if k != "strategy"})[:2] for s in seeds}
    owned = sharded.owns([runs[s][0] for s in seeds]) if sharded else [True] * len(seeds)
    records = {}

    def run(s):
        start = time.perf_counter()
        records[s] = distill_student(profile, manifest, teacher, student, seed=s, verbose=verbose, **options)[1]
        progress.report(records[s], time.perf_counter() - start)

    for s, mine in zip(seeds, owned):
        if mine or training.load_finished(runs[s][1], runs[s][0]) is not None:
            run(s)
    _wait_for_other_shards(sharded, {s: runs[s] for s in seeds if s not in records}, run)
    return [records[s] for s in seeds]


def _wait_for_other_shards(sharded, pending: dict, load, poll_s: float = 30.0) -> None:
    """Load each pending run (``{seed: (key, folder)}``) once another shard has
    finished it; :class:`~kd_utils.shard.ShardPending` when ``KD_SHARD_WAIT`` runs out."""
    if not pending:
        return
    wait = shard.wait_seconds()
    start = last_note = time.monotonic()
    print(f"shard {sharded}: waiting up to {wait / 3600:.1f} h for {len(pending)} run(s) of other shards "
          f"({', '.join(folder.name for _, folder in pending.values())}).", flush=True)
    while True:
        for seed, (key, folder) in list(pending.items()):
            if training.load_finished(folder, key) is not None:
                load(seed)
                del pending[seed]
        if not pending:
            return
        waited = time.monotonic() - start
        if waited >= wait:
            raise shard.ShardPending(
                f"{len(pending)} run(s) left to other shards after waiting {waited / 60:.0f} min "
                f"({', '.join(folder.name for _, folder in pending.values())}): run again once they are done "
                f"(KD_SHARD_WAIT sets the wait), or without --shard / KD_SHARD to train them here and "
                "assemble the tables.")
        if time.monotonic() - last_note >= 600:
            last_note = time.monotonic()
            print(f"shard {sharded}: still waiting for {len(pending)} run(s) ({waited / 60:.0f} min).", flush=True)
        time.sleep(min(poll_s, max(wait - waited, 0.0)))


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
    """The manifest written by notebook 01 (rebuilt, with a note, when images changed on disk since)."""
    folder = config.artifacts_dir(profile) / "data"
    _require(folder / "manifest.csv", "01_data_preparation", profile)
    try:
        return data.Manifest.load(folder)
    except data.ImagesChanged as err:
        storage.notice(f"{err} Rebuilding it now.")
        return prepare_data(profile, rebuild=True)


def _finished(profile, key, run_dir, notebook: str) -> dict:
    record = training.load_finished(run_dir, key)
    if record is None:
        raise MissingStepError(
            f"No finished run {run_dir.name} in {run_dir.parent}: run notebooks/{notebook}.ipynb first with "
            f"profile {profile.name!r} (or `python -m kd_utils reproduce --profile {profile.name}`)."
        )
    return record


def sweep(profile, manifest, teacher, *, temperatures=None, batch_sizes=None, alphas=None, student="DSNet",
          temperature=None, alpha=None, verbose=0, progress: Progress | None = None, **options):
    """DSNet for each temperature (Table 1), batch size (Table 6) or alpha, every seed.

    Returns ``{value: [record per seed]}``; each run is skipped when already
    done. ``temperature`` / ``alpha`` fix the other knob (default: the profile's).
    """
    plan = [("temperature", float(t)) for t in temperatures or ()]
    plan += [("batch_size", int(b)) for b in batch_sizes or ()]
    plan += [("alpha", float(a)) for a in alphas or ()]
    progress = progress or Progress(len(plan) * len(profile.seeds))
    records = {}
    for knob, value in plan:
        settings = {"temperature": temperature, "alpha": alpha, **options, knob: value}
        records[value] = repeat(profile, manifest, teacher, student, verbose=verbose, progress=progress, **settings)
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


def _choice_basis(profile, manifest, teacher=None) -> dict:
    """What a choice on validation depends on: the teacher (default the
    profile's teacher run) and the data."""
    key = teacher_key(teacher) if teacher is not None else _teacher_run(profile, manifest.content_hash)[0]
    return {"teacher": key, "manifest": manifest.content_hash}


def save_choice(profile: config.Profile, name: str, value, basis: dict | None = None) -> Path:
    return storage.write_json(config.artifacts_dir(profile) / f"chosen_{name}.json",
                              {name: value, "chosen_on": "mean validation accuracy over seeds", "basis": basis})


def load_choice(profile: config.Profile, name: str, notebook: str = "04_temperature_sweep", basis=None):
    """A value chosen on validation; a choice made for another teacher or data counts as missing."""
    path = _require(config.artifacts_dir(profile) / f"chosen_{name}.json", notebook, profile)
    saved = reporting.load_record(path)
    if basis is not None and saved.get("basis") not in (None, basis):
        raise MissingStepError(f"{path} was chosen for another teacher or data set: run notebooks/{notebook}.ipynb "
                               f"again with profile {profile.name!r}.")
    return saved[name]


SETTINGS = ("temperature", "alpha", "scale_by_t2")

#: How a record, table or summary names each loss form.
LOSS_FORMS = {False: "paper eq. (5)", True: "eq. (5) with T^2"}


def chosen_settings(profile: config.Profile, manifest=None, teacher=None) -> dict:
    """``{"temperature": T, "alpha": alpha, "scale_by_t2": bool}`` chosen on
    validation by notebook 04 (for ``teacher`` and ``manifest``, default the profile's)."""
    basis = _choice_basis(profile, manifest or load_manifest(profile), teacher)
    return {name: load_choice(profile, name, basis=basis) for name in SETTINGS}


def choose_settings(profile: config.Profile, manifest, teacher, verbose: int = 0) -> dict:
    """Notebook 04's choice, by mean validation accuracy over seeds (the test
    split plays no part): the loss form and T together, over the profile's
    temperatures with the paper's equation (5) and with Hinton's T^2-scaled
    soft term, at the profile's alpha; then alpha over the profile's alphas
    at that form and T. Saved for the later notebooks. Returns the choice and
    the sweeps' records (``by_temperature``: ``{form: {T: runs}}`` with the
    forms of :data:`LOSS_FORMS`; ``by_alpha``: ``{alpha: runs}``)."""
    progress = Progress(2 * len(profile.temperatures) * len(profile.seeds))
    by_temperature = {
        LOSS_FORMS[t2]: sweep(profile, manifest, teacher, temperatures=profile.temperatures, scale_by_t2=t2,
                              verbose=verbose, progress=progress)
        for t2 in (False, True)
    }
    candidates = {(t2, t): runs for t2 in (False, True) for t, runs in by_temperature[LOSS_FORMS[t2]].items()}
    scale_by_t2, temperature = choose_on_validation(candidates)
    by_alpha = sweep(profile, manifest, teacher, alphas=profile.alphas, temperature=temperature,
                     scale_by_t2=scale_by_t2, verbose=verbose)
    chosen = save_settings(profile, manifest, teacher, temperature=temperature, alpha=choose_on_validation(by_alpha),
                           scale_by_t2=scale_by_t2)
    return {**chosen, "by_temperature": by_temperature, "by_alpha": by_alpha}


def save_settings(profile: config.Profile, manifest, teacher, *, temperature, alpha, scale_by_t2) -> dict:
    """Save the loss form, T and alpha chosen on validation for this teacher and
    data, where notebooks 05-07 find them (:func:`chosen_settings`); returns them."""
    basis = _choice_basis(profile, manifest, teacher)
    chosen = {"temperature": temperature, "alpha": alpha, "scale_by_t2": scale_by_t2}
    for name in SETTINGS:
        save_choice(profile, name, chosen[name], basis)
    return chosen


def settings_for(profile: config.Profile, manifest, teacher) -> dict:
    """The loss form, T and alpha chosen on validation for this teacher and
    data; when notebook 04 has not chosen them yet, its sweep runs now (skip-if-done)."""
    try:
        return chosen_settings(profile, manifest, teacher)
    except MissingStepError:
        print("No loss form, T and alpha chosen yet for this teacher and data: running the sweep of notebook 04 now.")
        chosen = choose_settings(profile, manifest, teacher)
        return {name: chosen[name] for name in SETTINGS}


def describe_settings(settings: dict) -> str:
    """``"T = 10, alpha = 0.1, eq. (5) with T^2"``: a chosen setting in words."""
    return (f"T = {settings['temperature']:g}, alpha = {settings['alpha']:g}, "
            f"{LOSS_FORMS[bool(settings.get('scale_by_t2', False))]}")


def data_and_teacher(profile: config.Profile, verbose: int = 2):
    """``(manifest, teacher, teacher_record)`` for the notebooks from 02 on:
    loaded when notebooks 01 and 02 made them (here or on Drive), built now
    when they are missing, so any notebook runs alone on a fresh machine."""
    manifest = prepare_data(profile)
    teacher, record = train_teacher(profile, manifest, verbose=verbose)
    return manifest, teacher, record


def _student_of_profile(profile, manifest, student="DSNet", teacher=None, **settings):
    """``(key, folder, config)`` of a student run distilled from ``teacher``
    (default: the profile's own teacher run)."""
    teacher = teacher_key(teacher) if teacher is not None else _teacher_run(profile, manifest.content_hash)[0]
    return _student_run(profile, manifest.content_hash, teacher, student, **settings)


def load_student(profile, student="DSNet", *, temperature=None, alpha=None, batch_size=None, seed=None,
                 scale_by_t2=False, soft_loss="ce", notebook="03_distill_dsnet", manifest=None, teacher=None):
    """``(model, record)`` of a distillation run an earlier notebook finished
    (from ``teacher``, default the profile's teacher run, on ``manifest``, default the profile's)."""
    manifest = manifest or load_manifest(profile)
    key, run_dir, _ = _student_of_profile(profile, manifest, student, teacher, temperature=temperature, alpha=alpha,
                                          batch_size=batch_size, seed=seed, scale_by_t2=scale_by_t2,
                                          soft_loss=soft_loss)
    record = _finished(profile, key, run_dir, notebook)
    return _loaded(run_dir, record, profile, manifest)


def compared_models(profile: config.Profile, manifest, teacher, teacher_record: dict, chosen: dict) -> dict:
    """The models notebook 06 scores beyond the test split, ``{name: [record per run]}``:
    the teacher, DSNet and each large student distilled (``chosen`` settings)
    and without the teacher. A profile whose teacher trains on robust views
    (``robust_teacher``) while its students do too adds DSNet trained without
    the views, distilled from that teacher and without it: whether
    distillation passes the teacher's robustness on. Runs finished by
    notebooks 03-05 are loaded; the extra ones are trained here."""
    groups = {"Teacher ResNet50": [teacher_record],
              "DSNet distilled": repeat(profile, manifest, teacher, **chosen),
              "DSNet without teacher": repeat(profile, manifest, teacher, alpha=1.0)}
    if profile.robust_teacher and profile.robust_students:
        groups["DSNet distilled, trained without the views"] = repeat(profile, manifest, teacher, robust=False,
                                                                        **chosen)
        groups["DSNet without teacher, trained without the views"] = repeat(profile, manifest, teacher, alpha=1.0,
                                                                              robust=False)
    for name in profile.students:
        groups[f"{name} distilled"] = repeat(profile, manifest, teacher, name, **chosen)
        groups[f"{name} without teacher"] = repeat(profile, manifest, teacher, name, alpha=1.0)
    return groups


def final_student_path(profile: config.Profile, student: str = "DSNet", *, manifest=None, teacher=None) -> Path:
    """The ``.keras`` file of the student to deploy: the temperature and alpha
    chosen on validation (notebook 04) and, of its seeds, the one with the
    best validation accuracy (distilled from ``teacher``, default the profile's
    teacher run, on ``manifest``, default the profile's)."""
    manifest = manifest or load_manifest(profile)
    chosen = chosen_settings(profile, manifest, teacher)
    records = {}
    for seed in profile.seeds:
        key, run_dir, _ = _student_of_profile(profile, manifest, student, teacher, seed=seed, **chosen)
        record = training.load_finished(run_dir, key)
        if record is not None:
            records[run_dir] = record
    if not records:
        raise MissingStepError(
            f"No finished {student} run at T={chosen['temperature']:g}, alpha={chosen['alpha']:g} in "
            f"{config.artifacts_dir(profile) / 'runs'}: run notebooks/04_temperature_sweep.ipynb with profile "
            f"{profile.name!r} (or `python -m kd_utils reproduce --profile {profile.name}`)."
        )
    return choose_on_validation(records) / training.BEST_FILE
