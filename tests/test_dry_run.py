"""The paper profile's dry run: its profile, its stand-in weights files and,
marked slow, the whole run of the seven notebooks on its code path."""

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kd_utils import config, models, paths
from kd_utils.experiments import dry_run, notebook
from kd_utils.tools import commands

REPO = Path(__file__).resolve().parent.parent

#: What differs between paper and its dry run: the scale and where the inputs come from.
DRY_RUN_FIELDS = {"name", "data_root", "weights", "stand_ins", "teacher_epochs", "student_epochs",
                  "backbone_student_epochs", "seeds", "temperatures", "batch_sizes", "alphas",
                  "run_eagerly"}


def test_dry_run_profile_is_paper_but_for_scale_and_stand_ins(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "d"))
    paper, dry = config.get_profile("paper"), config.get_profile(config.DRY_RUN)
    assert dry == config.dry_run_profile() and dry.name == "paper-dry-run"
    differs = {f for f in paper.__dataclass_fields__ if getattr(paper, f) != getattr(dry, f)}
    assert differs <= DRY_RUN_FIELDS
    assert dry.image_size == 224 and dry.data_source == "folder" and dry.stand_ins
    assert dry.run_eagerly and not paper.run_eagerly  # ten images: tracing would be most of the run
    assert (dry.alpha, dry.temperature, dry.lr_backbone, dry.lr_dsnet) == (0.1, 10.0, 1e-4, 1e-3)
    assert dry.students == config.PRETRAINED_STUDENTS
    assert len(dry.seeds) == 1 and len(dry.temperatures) == 2 and len(dry.batch_sizes) == 2
    # Its folders follow KD_DATA_DIR when the profile is asked for, not when kd_utils was imported.
    assert Path(dry.weights) == tmp_path / "d" / "paper-dry-run" / "weights"
    assert Path(dry.data_root) == tmp_path / "d" / "paper-dry-run" / "images"
    assert notebook.notebook_profile("paper-dry-run", "11").seeds == (11,)
    # The paper profile itself is untouched.
    assert paper.weights == "imagenet" and paper.data_root is None and not paper.stand_ins


def test_the_robust_dry_run_is_the_paper_dry_run_with_colab_robusts_switches(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "d"))
    dry, robust = config.get_profile(config.DRY_RUN), config.get_profile("colab-robust-dry-run")
    assert robust == config.dry_run_profile(robust=True) and robust.name == config.ROBUST_DRY_RUN
    differs = {f for f in dry.__dataclass_fields__ if getattr(dry, f) != getattr(robust, f)}
    assert differs == {"name", "mixed_precision", *config.ROBUST_CHANGES}
    colab_robust = config.get_profile("colab-robust")
    assert all(getattr(robust, k) == getattr(colab_robust, k) for k in (*config.ROBUST_CHANGES, "mixed_precision"))
    assert robust.data_root == dry.data_root and robust.weights == dry.weights  # the same stand-ins
    assert commands.dry_run_profile_name("colab-robust") == "colab-robust-dry-run"
    assert commands.dry_run_profile_name(None) == commands.dry_run_profile_name("paper") == "paper-dry-run"
    with pytest.raises(commands.UsageError, match="give --profile paper or colab-robust"):
        commands.dry_run_profile_name("colab")


def test_a_weights_folder_gives_each_backbone_its_file(tmp_path):
    import keras

    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=models.WEIGHTS_FILES["MobileNet"]):
        models.build_student("MobileNet", 32, weights=str(folder))
    with pytest.raises(ValueError, match="folder of weights files"):
        models.build_student("MobileNet", 32, weights=str(tmp_path / "nowhere"))
    path = dry_run.write_weights("MobileNet", 32, folder)
    assert path.name == "mobilenet_1_0_224_tf_no_top.h5"
    saved = dry_run.read_weights_file(path)
    keras.utils.set_random_seed(0)
    loaded = backbone(models.build_student("MobileNet", 32, weights=str(folder)))
    random = backbone(models.build_student("MobileNet", 32, weights=None))
    assert [name for name, _ in saved] == [name for name, _ in dry_run.backbone_weights(loaded)]
    for (_, file_arrays), (_, arrays), (_, fresh) in zip(saved, dry_run.backbone_weights(loaded),
                                                          dry_run.backbone_weights(random)):
        assert all(np.array_equal(a, b) for a, b in zip(file_arrays, arrays))
    kernels = [(a[0], b[0]) for (_, a), (_, b) in zip(saved, dry_run.backbone_weights(random)) if a[0].ndim == 4]
    assert kernels and not any(np.array_equal(a, b) for a, b in kernels)  # the file is not a random init


def test_the_stand_in_images_split_as_the_paper_splits_them(tmp_path):
    from kd_utils import data

    dry = config.dry_run_profile()
    dry_run.write_images(tmp_path / "images", dry.image_size, dry.seed)
    manifest = data.build_manifest(dry.data_source, tmp_path / "images", image_size=dry.image_size, seed=dry.seed,
                                   val_fraction=dry.val_fraction, test_fraction=dry.test_fraction,
                                   split=dry.split, work_dir=tmp_path / "work")
    counts = manifest.count_dict()
    assert manifest.split_mode == "pooled"
    assert {split: row["total"] for split, row in counts.items()} == {"train": 5, "val": 2, "test": 3}
    assert all(row["benign"] and row["malignant"] for row in counts.values())  # both classes everywhere


def test_ensure_refuses_a_profile_without_stand_ins():
    with pytest.raises(ValueError, match="no stand-ins"):
        dry_run.ensure(config.get_profile("paper"))


# --------------------------------------------------------------------------- the dry run itself (slow)


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """``python -m kd_utils reproduce --profile paper --dry-run``, all its folders in a tmp folder."""
    root = tmp_path_factory.mktemp("dry-run")
    env = {**os.environ, "KD_DATA_DIR": str(root / "data"), "KD_ARTIFACTS": str(root / "artifacts"),
           "KD_RESULTS": str(root / "results"), "TF_CPP_MIN_LOG_LEVEL": "3",
           # the notebooks' kernels import this checkout's kd_utils
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("KD_PROFILE", None)
    env.pop("KD_ROOT", None)
    run = subprocess.run([sys.executable, "-m", "kd_utils", "reproduce", "--profile", "paper", "--dry-run"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=7200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return {"root": root, "stdout": run.stdout, "results": root / "results" / config.DRY_RUN,
            "artifacts": root / "artifacts" / config.DRY_RUN, "weights": root / "data" / config.DRY_RUN / "weights"}


def expected_outputs():
    """The tables and figures of the cpu profile's results, but those made
    elsewhere (MODEL_CARD.md: by `export`) or by another data source only
    (figure5_cc0_sample: the CC0 photos shown beside synthetic training data)."""
    made_elsewhere = {"MODEL_CARD.md", "figure5_cc0_sample.png"}
    cpu = paths.repo_root() / "results" / "cpu"
    names = {p.name for p in [*cpu.glob("*.md"), *cpu.glob("*.png")]} - made_elsewhere
    assert len(names) > 20, f"too few results in {cpu} to compare with"
    return sorted(names)


@pytest.mark.slow
def test_dry_run_writes_every_table_and_figure(dry):
    missing = [name for name in expected_outputs() if not (dry["results"] / name).is_file()]
    assert not missing, f"the dry run did not write {missing} in {dry['results']}"
    executed = sorted(p.name for p in (dry["results"] / "notebooks").glob("0*.ipynb"))
    assert executed == sorted(p.name for p in (REPO / "notebooks").glob("0*.ipynb")) and len(executed) == 7
    assert "Dry run of the paper profile" in dry["stdout"]


def backbone(model):
    """The keras.applications backbone inside a student or teacher."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def _input_size(keras_file: Path) -> list:
    """The input shape stored in a .keras file's config, without loading the model."""
    with zipfile.ZipFile(keras_file) as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    return next(layer["config"]["batch_shape"] for layer in layers if layer["class_name"] == "InputLayer")


def _records(dry) -> list[tuple[Path, dict]]:
    runs = sorted((dry["artifacts"] / "runs").glob("*/record.json"))
    return [(p.parent, json.loads(p.read_text())) for p in runs]


@pytest.mark.slow
def test_dry_run_models_are_224px_and_every_backbone_is_built_from_its_file(dry):
    records = _records(dry)
    students = {r["config"].get("student", "ResNet50 teacher") for _, r in records}
    assert students >= {*config.PRETRAINED_STUDENTS, "DSNet", "ResNet50 teacher"}
    for run_dir, record in records:
        assert record["config"]["image_size"] == 224, run_dir.name
        assert _input_size(run_dir / "best.keras") == [None, 224, 224, 3], run_dir.name
        if record["config"].get("student") != "DSNet":
            assert Path(record["config"]["weights"]) == dry["weights"], run_dir.name
    for name in config.PRETRAINED_STUDENTS:
        path = dry["weights"] / models.WEIGHTS_FILES[name]
        saved = dry_run.read_weights_file(path)
        built = dry_run.backbone_weights(backbone(models.build_student(name, 224, weights=str(dry["weights"]))))
        assert [n for n, _ in saved] == [n for n, _ in built], f"{name}: layer names differ from {path.name}"
        for (layer, file_arrays), (_, arrays) in zip(saved, built):
            assert len(file_arrays) == len(arrays) and all(np.array_equal(a, b) for a, b in zip(file_arrays, arrays)), \
                f"{name} {layer}: weights differ from {path.name}"
        random = dry_run.backbone_weights(backbone(models.build_student(name, 224, weights=None)))
        assert not all(np.array_equal(a[0], b[0]) for (_, a), (_, b) in zip(saved, random)), \
            f"{name}: {path.name} equals a random initialisation"


@pytest.mark.slow
def test_every_dry_run_backbone_started_from_its_stand_in_file(dry):
    """The trained backbones lie within Adam's steps of the file's weights
    (each step moves a weight by at most the learning rate), while any other
    initialisation lies far away: every run started from the file."""
    import keras

    profile = config.get_profile("paper")
    manifest = pd.read_csv(dry["artifacts"] / "data" / "manifest.csv")
    n_train = int((manifest.split == "train").sum())
    checked = set()
    for run_dir, record in _records(dry):
        c = record["config"]
        name = "ResNet50" if "student" not in c else c["student"]
        if name == "DSNet" or (name, "student" in c) in checked:
            continue
        checked.add((name, "student" in c))
        steps = c["epochs"] * math.ceil(n_train / c["batch_size"])
        bound = 2 * profile.lr_backbone * steps  # Adam: at most the learning rate per step
        model = keras.saving.load_model(run_dir / "best.keras", compile=False)
        saved = dict(dry_run.read_weights_file(dry["weights"] / models.WEIGHTS_FILES[name]))
        largest = 0.0
        for layer in backbone(model).layers:
            for i, variable in enumerate(layer.trainable_weights):
                largest = max(largest, float(np.max(np.abs(np.asarray(variable) - saved[layer.name][i]))))
        assert largest <= bound, f"{run_dir.name}: a weight moved {largest:.2e} from the file (bound {bound:.2e})"
    assert {n for n, _ in checked} == set(config.PRETRAINED_STUDENTS) and ("ResNet50", False) in checked


def test_the_dry_run_uses_real_images_when_the_kaggle_dataset_is_here(tmp_path):
    """Laid out from the CC0 sample as the Kaggle release is: the stand-ins are
    copies of its first files (by name), and they split as the paper splits."""
    import json
    import shutil

    import pandas as pd

    from kd_utils import data

    kaggle = paths.data_dir() / config.KAGGLE_FOLDER
    labels = pd.read_csv(paths.sample_dir() / "labels.csv")
    for label, rows in labels.groupby("label"):
        for i, name in enumerate(sorted(rows.filename)):
            where = kaggle / ("test" if i % 2 else "train") / data.CLASS_NAMES[label]
            where.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths.sample_dir() / name, where / name)
    assert dry_run.write_images(tmp_path / "synthetic", 64, 10, real={})  # {}: none, generated as before
    assert json.loads((tmp_path / "synthetic" / dry_run.IMAGES_MARKER).read_text()) == {"images": "synthetic"}
    dry = config.dry_run_profile()
    root = dry_run.write_images(tmp_path / "images", dry.image_size, dry.seed)
    for where in ("train/benign", "train/malignant", "test/benign", "test/malignant"):
        copied = sorted(p.name for p in (root / where).iterdir())
        assert copied == sorted(p.name for p in (kaggle / where).iterdir())[:len(copied)]
        assert len(copied) == (dry_run.TRAIN_PER_CLASS if where.startswith("train") else dry_run.TEST_PER_CLASS)
        assert all((root / where / n).read_bytes() == (kaggle / where / n).read_bytes() for n in copied)
    assert str(kaggle) in json.loads((root / dry_run.IMAGES_MARKER).read_text())["images"]
    manifest = data.build_manifest(dry.data_source, root, image_size=dry.image_size, seed=dry.seed,
                                   val_fraction=dry.val_fraction, test_fraction=dry.test_fraction,
                                   split=dry.split, work_dir=tmp_path / "work")
    assert {split: row["total"] for split, row in manifest.count_dict().items()} == {"train": 5, "val": 2, "test": 3}
