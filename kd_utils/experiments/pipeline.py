"""The paper's steps as functions of a profile: data, teacher, distilled student.

Notebooks and the command line call these, so a step behaves the same
wherever it runs. Each training step is a run with a key and a folder
derived from it (:mod:`kd_utils.experiments.runs`); a run is skipped when a finished
record with the same key is there (:mod:`kd_utils.training`), so a changed
teacher or changed data makes new runs. The sweeps and the choices made on
validation are in :mod:`kd_utils.experiments.choices`.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from .. import batches, config, data, evaluation, models, paths, reporting, storage, training
from . import memory, runs, shard
from ..distillation import Distiller, SoftKLDivergence


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
    folder = paths.artifacts_dir(profile) / "data"
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
    raise ValueError(f"teacher_control must be one of {runs.TEACHER_CONTROLS} or None, got {control!r}.")


def datasets(profile: config.Profile, manifest: data.Manifest, batch_size: int | None = None, teacher=None,
             teacher_control: str | None = None, augment: str | None = None, zero_logits: bool = False):
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
    stay those of the images as they are. ``zero_logits`` (no teacher): the
    batches carry logits of zero instead, for a Distiller at ``alpha = 1``,
    whose loss gives them no weight.
    """
    batch_size = batch_size or profile.batch_size

    def logits(split):
        if split == "test" or (teacher is None and not zero_logits):
            return None
        if teacher is None:
            return np.zeros((len(manifest.split(split)), 2), np.float32)
        seed = profile.seed * 10 + data.SPLITS.index(split)
        return control_logits(teacher_logits(profile, manifest, teacher, split), teacher_control, seed)

    return tuple(
        batches.make_dataset(manifest, split, profile.image_size, batch_size, seed=profile.seed, per_epoch=True,
                             teacher_logits=logits(split), augment=augment if split == "train" else None)
        for split in data.SPLITS
    )


_LOGITS_CACHE: dict = {}


def teacher_logits(profile: config.Profile, manifest: data.Manifest, teacher, split: str):
    """The teacher's logits for every image of ``split``, in manifest order,
    each image at the teacher's size (:attr:`~kd_utils.config.Profile.teacher_size`).

    Cached by the teacher's key and the manifest's content hash, never by
    anything that two different teachers or datasets could share: in memory,
    and on disk in the teacher's run folder when it has one.
    """
    size = profile.teacher_size
    key = (runs.teacher_key(teacher), manifest.content_hash, size, split)
    if key in _LOGITS_CACHE:
        return _LOGITS_CACHE[key]
    run_dir = getattr(teacher, "kd_run_dir", None)
    path = Path(run_dir) / "logits" / f"{manifest.content_hash[:16]}-{size}px-{split}.npy" if run_dir else None
    n = len(manifest.split(split))
    logits = None
    if path is not None and path.is_file():
        digest = path.with_suffix(".sha256")
        problem = "has no checksum beside it (an older version wrote it)" if not digest.is_file() else None
        try:
            if problem is None and digest.read_text().strip() != storage.sha256_file(path):
                problem = "is damaged (its checksum differs)"
            logits = None if problem else np.load(path)
        except Exception as err:  # noqa: BLE001 - whatever is wrong with it, it is not used
            problem = f"cannot be read ({type(err).__name__})"
        if problem is None and logits.shape != (n, 2):
            problem = f"holds logits of shape {logits.shape}, not ({n}, 2)"
        if problem:
            storage.notice(f"{path} {problem}; the teacher's logits are computed again.")
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


def _loaded(run_dir: Path, record: dict, profile, manifest) -> tuple[keras.Model, dict]:
    """A finished run: its model, and its record with ``run_dir`` (where it lies now).

    A file of the run that is missing or differs from its checksum in the
    record is reported in one line and rebuilt: the history and the
    configuration from the record, the test predictions from the model."""
    model = keras.saving.load_model(run_dir / training.BEST_FILE, compile=False)
    model.run_eagerly = profile.run_eagerly
    for name in training.damaged(run_dir, record):
        storage.notice(f"{run_dir / name} is missing or does not match the checksum in {training.RECORD_FILE}; "
                       "it is rebuilt.")
        if name == "history.csv":
            training.write_history(run_dir, record)
        elif name == "config.json":
            storage.write_json(run_dir / name, runs.config_file(record["key"], record["config"],
                                                                record.get("teacher_key"), record["manifest_hash"]))
        elif name == reporting.PREDICTIONS_FILE:
            test_ds = datasets(profile, manifest or load_manifest(profile))[2]
            runs.save_predictions(run_dir, evaluation.predict(model, test_ds))
        else:
            continue
        record = training.rebuilt(run_dir, record, name)
    return model, {**record, "run_dir": str(run_dir)}


def _train_or_load(profile, manifest, key, run_dir, run_config, train, teacher=None):
    """The finished run, else ``train()`` under the run's lock, then its record."""
    done = training.load_finished(run_dir, key)
    if done:
        return _loaded(run_dir, done, profile, manifest)
    with storage.RunLock(run_dir) as lock:
        done = training.load_finished(run_dir, key)  # finished by another process meanwhile
        if done:
            return _loaded(run_dir, done, profile, manifest)
        storage.write_json(run_dir / "config.json", runs.config_file(key, run_config, teacher, manifest.content_hash))
        model, fit_info, test_ds, *teacher_test = train(lock)
        lock.check()
        return model, runs.finish(model, run_dir, key, run_config, manifest, fit_info, test_ds, teacher, *teacher_test)


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
    """``build(batching)`` for :func:`kd_utils.experiments.memory.fit_within_memory`: the
    profile's teacher (with ``start["weights"]`` when given), compiled with
    Adam at ``learning_rate`` (a number or a schedule), and the datasets at
    the micro-batch."""
    accel = runs.accelerator_options(profile)

    def build(batching):
        runs.release_memory()
        training.set_seeds(profile.seed)
        splits = datasets(profile.teacher_view(), manifest, batching.micro_batch, augment=runs.teacher_augment(profile))
        with runs.build_scope(strategy, accel.get("mixed_precision", False)):
            teacher = _new_teacher(profile)
            if start:
                teacher.set_weights(start["weights"])
            runs.compile_classifier(teacher, learning_rate, batching.accumulation_steps, **accel,
                                    **runs.execution_options(profile))
        return teacher, splits

    return build


def pretrain_teacher(profile: config.Profile, verbose: int = 2, strategy=None):
    """Pretrain (or load, when done) the teacher on generated images; returns ``(model, record)``.

    The paper's teacher starts from ImageNet weights: it knows about images
    before it sees a lesion. Without network or ImageNet (the ``cpu``
    profile) the stand-in is a ResNet50 trained first on
    :func:`kd_utils.experiments.runs.pretraining_data`: many more generated lesions than the profile's
    training split holds, none of them in its splits. The student never sees
    them; what the teacher learns there reaches it only through the soft targets.
    """
    manifest = runs.pretraining_data(profile)
    key, run_dir, run_config = runs.pretrain_run(profile, manifest.content_hash)
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
    return runs.mark(model, key, run_dir), record


def train_teacher(profile: config.Profile, manifest: data.Manifest, verbose: int = 2, strategy=None):
    """Train (or load, when done) the ResNet50 teacher; returns ``(model, record)``.

    The teacher is trained once, with ``profile.seed``: every student of every
    seed distils from this same teacher. A profile with
    ``teacher_pretrain_per_class`` first pretrains it (:func:`pretrain_teacher`)
    and then trains it on the profile's training split at ``teacher_finetune_lr``;
    the record's ``pretraining`` holds that run's key and accuracies.
    """
    key, run_dir, run_config = runs.teacher_run(profile, manifest.content_hash)
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
                                       "train_images": int(runs.pretraining_data(profile).counts().loc["train", "total"]),
                                       "best_val_accuracy": pre_record["best_val_accuracy"],
                                       "test_accuracy": pre_record["test"]["accuracy"]}
        return teacher, fit_info, splits[2]

    model, record = _train_or_load(profile.teacher_view(), manifest, key, run_dir, run_config, train)
    return runs.mark(model, key, run_dir), record


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

    ``teacher=None`` is allowed with ``alpha = 1`` only: the run without a
    teacher needs none (its key never names one). Its batches then carry
    logits of zero, which the loss ignores at ``alpha = 1`` as it ignores
    the teacher's - the weights come out the same to the bit, and one run
    serves both calls; only the logged ``distillation_loss`` (weight 0) is
    taken against whichever logits trained it.
    """
    teacher_id = None if teacher is None else runs.teacher_key(teacher)
    key, run_dir, run_config = runs.student_run(
        profile, manifest.content_hash, teacher_id, student, temperature=temperature, alpha=alpha,
        batch_size=batch_size, scale_by_t2=scale_by_t2, soft_loss=soft_loss, seed=seed,
        teacher_control=teacher_control, robust=robust)
    if teacher is None and run_config["alpha"] < 1.0:
        raise ValueError("A student can only be distilled from a teacher: teacher=None needs alpha=1 "
                         "(the run without a teacher).")
    accel = runs.accelerator_options(profile)
    c = run_config

    def build(batching):
        runs.release_memory()
        training.set_seeds(c["seed"])
        splits = datasets(profile, manifest, batching.micro_batch, teacher=teacher,
                          teacher_control=c["teacher_control"], augment="robust" if "augment" in c else None,
                          zero_logits=teacher is None)
        with runs.build_scope(strategy, accel.get("mixed_precision", False)):
            model = models.build_student(student, profile.image_size, weights=c["weights"],
                                         color_constancy=profile.color_constancy)
            distiller = Distiller(student=model, teacher=None)
            distiller.compile(
                optimizer=runs.optimizer(c["learning_rate"], accel.get("mixed_precision", False),
                                         batching.accumulation_steps, c.get("weight_average")),
                metrics=[keras.metrics.CategoricalAccuracy()],
                distillation_loss_fn=SoftKLDivergence() if c["soft_loss"] == "kl" else None,
                alpha=c["alpha"],
                temperature=c["temperature"] or 1.0,
                scale_by_t2=c["scale_by_t2"],
                **({"jit_compile": accel["jit_compile"]} if accel else {}),
                **runs.execution_options(profile),
            )
        return distiller, splits

    def train(lock):
        distiller, (_, _, test_ds), fit_info = memory.fit_within_memory(
            build, c["batch_size"], c["epochs"], run_dir, seed=c["seed"], verbose=verbose,
            tensorboard=profile.tensorboard, lock=lock, patience=c.get("patience"))
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
    runs and waits for the others' (:mod:`kd_utils.experiments.shard`)."""
    seeds = profile.seeds if seeds is None else seeds
    progress = progress or Progress(len(seeds))
    sharded = shard.from_env()
    runs = {} if sharded is None else {  # seed -> (key, folder)
        s: student_of_profile(profile, manifest, student, teacher, seed=s,
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
    shard.wait_for(sharded, {s: runs[s] for s in seeds if s not in records}, run,
                   finished=lambda key, folder: training.load_finished(folder, key) is not None)
    return [records[s] for s in seeds]


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


class MissingStepError(FileNotFoundError):
    """An earlier notebook's output is missing; the message names the notebook."""


def require_step(path: Path, notebook: str, profile: config.Profile) -> Path:
    if not Path(path).exists():
        raise MissingStepError(
            f"{path} is missing: run notebooks/{notebook}.ipynb first with profile {profile.name!r} "
            f"(or `python -m kd_utils reproduce --profile {profile.name}`)."
        )
    return Path(path)


def load_manifest(profile: config.Profile) -> data.Manifest:
    """The manifest written by notebook 01 (rebuilt, with a note, when images changed on disk since)."""
    folder = paths.artifacts_dir(profile) / "data"
    require_step(folder / "manifest.csv", "01_data_preparation", profile)
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


def data_and_teacher(profile: config.Profile, verbose: int = 2):
    """``(manifest, teacher, teacher_record)`` for the notebooks from 02 on:
    loaded when notebooks 01 and 02 made them (here or on Drive), built now
    when they are missing, so any notebook runs alone on a fresh machine."""
    manifest = prepare_data(profile)
    teacher, record = train_teacher(profile, manifest, verbose=verbose)
    return manifest, teacher, record


def student_of_profile(profile, manifest, student="DSNet", teacher=None, **settings):
    """``(key, folder, config)`` of a student run distilled from ``teacher``
    (default: the profile's own teacher run)."""
    teacher = runs.teacher_key(teacher) if teacher is not None else runs.teacher_run(profile, manifest.content_hash)[0]
    return runs.student_run(profile, manifest.content_hash, teacher, student, **settings)


def load_student(profile, student="DSNet", *, temperature=None, alpha=None, batch_size=None, seed=None,
                 scale_by_t2=False, soft_loss="ce", notebook="03_distill_dsnet", manifest=None, teacher=None):
    """``(model, record)`` of a distillation run an earlier notebook finished
    (from ``teacher``, default the profile's teacher run, on ``manifest``, default the profile's)."""
    manifest = manifest or load_manifest(profile)
    key, run_dir, _ = student_of_profile(profile, manifest, student, teacher, temperature=temperature, alpha=alpha,
                                          batch_size=batch_size, seed=seed, scale_by_t2=scale_by_t2,
                                          soft_loss=soft_loss)
    record = _finished(profile, key, run_dir, notebook)
    return _loaded(run_dir, record, profile, manifest)
