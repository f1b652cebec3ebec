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

from . import config, data, evaluation, models, reporting, training
from .distillation import Distiller


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


def _classifier_compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy()],
    )


def _finish(model, run_dir: Path, run_config: dict, fit_info: dict, test_ds) -> dict:
    record = {"config": run_config, **fit_info, "test": evaluation.evaluate(model, test_ds)}
    training.save_record(run_dir, record)
    return record


def train_teacher(profile: config.Profile, manifest: data.Manifest, run_dir=None, verbose: int = 2):
    """Train (or load, when done) the ResNet50 teacher; returns ``(model, record)``."""
    run_dir = Path(run_dir or config.artifacts_dir(profile) / "teacher")
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
    }
    done = training.load_or_prepare(run_dir, run_config)
    if done:
        return keras.saving.load_model(run_dir / "best.keras", compile=False), done
    training.set_seeds(profile.seed)
    train_ds, val_ds, test_ds = datasets(profile, manifest)
    teacher = models.build_teacher(profile.image_size, weights=profile.weights)
    _classifier_compile(teacher, profile.lr_backbone)
    fit_info = training.fit(teacher, train_ds, val_ds, profile.teacher_epochs, run_dir, verbose=verbose)
    return teacher, _finish(teacher, run_dir, run_config, fit_info, test_ds)


def student_run_dir(profile, student, temperature, alpha, batch_size, scale_by_t2=False) -> Path:
    """``artifacts/<profile>/students/<student>_T<T>_a<alpha>_b<batch>[_t2]``."""
    name = f"{student.lower()}_T{float(temperature):g}_a{float(alpha):g}_b{int(batch_size)}"
    return config.artifacts_dir(profile) / "students" / (name + ("_t2" if scale_by_t2 else ""))


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
    run_dir=None,
    verbose: int = 2,
):
    """Distil ``student`` from ``teacher`` (or load it when done); returns ``(model, record)``."""
    temperature = profile.temperature if temperature is None else float(temperature)
    alpha = profile.alpha if alpha is None else float(alpha)
    batch_size = batch_size or profile.batch_size
    is_dsnet = student.lower() == "dsnet"
    lr = profile.lr_dsnet if is_dsnet else profile.lr_backbone
    epochs = profile.student_epochs if is_dsnet else profile.backbone_student_epochs
    run_dir = Path(run_dir or student_run_dir(profile, student, temperature, alpha, batch_size, scale_by_t2))
    run_config = {
        "model": f"{student} distilled",
        "profile": profile.name,
        "image_size": profile.image_size,
        "weights": None if is_dsnet else profile.weights,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "seed": profile.seed,
        "alpha": alpha,
        "temperature": temperature,
        "scale_by_t2": scale_by_t2,
        "data": manifest.info,
    }
    done = training.load_or_prepare(run_dir, run_config)
    if done:
        return keras.saving.load_model(run_dir / "best.keras", compile=False), done
    training.set_seeds(profile.seed)
    train_ds, val_ds, test_ds = datasets(profile, manifest, batch_size, teacher=teacher)
    model = models.build_student(student, profile.image_size, weights=run_config["weights"])
    distiller = Distiller(student=model, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(lr),
        metrics=[keras.metrics.CategoricalAccuracy()],
        alpha=alpha,
        temperature=temperature,
        scale_by_t2=scale_by_t2,
    )
    fit_info = training.fit(distiller, train_ds, val_ds, epochs, run_dir, verbose=verbose)
    fit_info["loss"] = distiller.loss_config()
    return model, _finish(model, run_dir, run_config, fit_info, test_ds)


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
    return keras.saving.load_model(run_dir / "best.keras", compile=False), record


def sweep(profile, manifest, teacher, *, temperatures=None, batch_sizes=None, student="DSNet", verbose=0):
    """DSNet distilled for each temperature (Table 1) or batch size (Table 6).

    Returns ``{value: record}``; each run is skipped when already done.
    """
    records = {}
    for t in temperatures or ():
        records[float(t)] = distill_student(profile, manifest, teacher, student, temperature=t, verbose=verbose)[1]
    for b in batch_sizes or ():
        records[int(b)] = distill_student(profile, manifest, teacher, student, batch_size=b, verbose=verbose)[1]
    return records


def choose_on_validation(records: dict):
    """The key whose run had the best validation accuracy (ties: the first)."""
    return max(records, key=lambda k: (records[k]["best_val_accuracy"], -list(records).index(k)))


def save_choice(profile: config.Profile, name: str, value) -> Path:
    path = config.artifacts_dir(profile) / f"chosen_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: value, "chosen_on": "validation accuracy"}))
    return path


def load_choice(profile: config.Profile, name: str, notebook: str):
    path = _require(config.artifacts_dir(profile) / f"chosen_{name}.json", notebook, profile)
    return reporting.load_record(path)[name]


def load_student(profile, student="DSNet", *, temperature=None, batch_size=None, notebook="03_distill_dsnet"):
    """``(model, record)`` of a distillation run an earlier notebook finished."""
    temperature = profile.temperature if temperature is None else temperature
    run_dir = student_run_dir(profile, student, temperature, profile.alpha, batch_size or profile.batch_size)
    record = reporting.load_record(_require(run_dir / "record.json", notebook, profile))
    return keras.saving.load_model(run_dir / "best.keras", compile=False), record
