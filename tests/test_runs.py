"""Run identity and run state at the pipeline level: what is reused, what is
trained again, and what a crash or a second writer can do to a run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from kd_utils import batches, config, data, models, paths, storage, training
from kd_utils.experiments import pipeline, runs


@pytest.fixture(scope="module")
def tiny(tiny_manifest):
    profile = config.get_profile("smoke", image_size=32, batch_size=32, seeds=(1,), student_epochs=2)
    manifest = tiny_manifest
    return profile, manifest


def dsnet_teacher(seed):
    keras.utils.set_random_seed(seed)
    return models.build_dsnet(32)  # any logits model can teach; this one is fast


def test_a_changed_teacher_means_new_student_runs(tiny):
    profile, manifest = tiny
    first_teacher, other_teacher = dsnet_teacher(0), dsnet_teacher(1)
    _, first = pipeline.distill_student(profile, manifest, first_teacher, verbose=0)
    _, other = pipeline.distill_student(profile, manifest, other_teacher, verbose=0)
    assert first["teacher_key"] == runs.teacher_key(first_teacher) != other["teacher_key"]
    assert first["key"] != other["key"] and first["run_dir"] != other["run_dir"]
    assert first["history"]["distillation_loss"] != other["history"]["distillation_loss"]  # trained, not reused
    assert any((Path(first["run_dir"]) / "tensorboard").rglob("*tfevents*"))  # the profile's switch is on
    # Asked again with the first teacher: its own run, reused.
    _, again = pipeline.distill_student(profile, manifest, first_teacher, verbose=0)
    assert again["key"] == first["key"] and again["history"] == first["history"]
    # Without the teacher the run does not depend on it: one baseline for both.
    _, base_a = pipeline.distill_student(profile, manifest, first_teacher, alpha=1.0, verbose=0)
    _, base_b = pipeline.distill_student(profile, manifest, other_teacher, alpha=1.0, verbose=0)
    assert base_a["key"] == base_b["key"] and base_a["teacher_key"] is None


def test_a_retrained_teacher_changes_the_keys_its_students_are_found_by(tiny):
    profile, manifest = tiny
    one, two = profile.replace(teacher_epochs=1), profile.replace(teacher_epochs=2)
    teacher_one, teacher_two = (runs.teacher_run(p, manifest.content_hash)[0] for p in (one, two))
    assert teacher_one != teacher_two
    student_one = pipeline.student_of_profile(one, manifest)[0]
    student_two = pipeline.student_of_profile(two, manifest)[0]
    assert student_one != student_two
    other_data = manifest.frame.copy()
    other_data.loc[0, "label"] = 1 - other_data.loc[0, "label"]
    changed = data.Manifest(other_data, manifest.report, manifest.source, dict(manifest.info))
    assert runs.teacher_run(one, changed.content_hash)[0] != teacher_one


def test_manifests_of_the_same_length_get_their_own_teacher_logits(tiny, tmp_path):
    profile, manifest = tiny
    other = data.build_manifest("synthetic", tmp_path / "images", image_size=32, synthetic_per_class=60, seed=99,
                                work_dir=tmp_path / "converted")
    assert len(other.frame) == len(manifest.frame) and len(other.split("val")) == len(manifest.split("val"))
    assert other.content_hash != manifest.content_hash
    teacher = dsnet_teacher(0)
    for m in (manifest, other):
        logits = pipeline.teacher_logits(profile, m, teacher, "val")
        images = np.concatenate([x.numpy() for x, _ in batches.make_dataset(m, "val", 32, 64, shuffle=False)])
        np.testing.assert_allclose(logits, np.asarray(teacher(images)), rtol=1e-5, atol=1e-5)


def test_a_student_run_never_checkpoints_the_teacher(tiny, monkeypatch):
    """With a ResNet50 teacher (~95 MB of weights) the student's folder stays small during and after training."""
    profile, manifest = tiny
    keras.utils.set_random_seed(0)
    teacher = models.build_teacher(32, weights=None)
    sizes = []

    class Probe(keras.callbacks.Callback):  # sees the state saved after the previous epoch
        def __init__(self, run_dir):
            super().__init__()
            self.run_dir = run_dir

        def on_epoch_end(self, epoch, logs=None):
            sizes.append(sum(p.stat().st_size for p in self.run_dir.rglob("*") if p.is_file()))

    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda model, tr, va, epochs, run_dir, **kw:
                        real_fit(model, tr, va, epochs, run_dir, **{**kw, "callbacks": [Probe(run_dir)]}))
    _, record = pipeline.distill_student(profile, manifest, teacher, verbose=0)
    run_dir = record["run_dir"]
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(run_dir) for f in files)
    assert len(sizes) == 2 and max(sizes) < 20e6 and total < 20e6
    assert sizes[1] > 0  # epoch 1's state was there when epoch 2 ended
    assert not (Path(run_dir) / "tensorboard").exists() or profile.tensorboard


def test_tensorboard_logs_follow_the_profile_switch(tiny):
    profile, manifest = tiny
    _, record = pipeline.distill_student(profile.replace(tensorboard=False), manifest, dsnet_teacher(5), verbose=0)
    assert not (Path(record["run_dir"]) / "tensorboard").exists()


def test_a_crash_between_training_and_record_resumes_without_training_again(tiny, monkeypatch):
    profile, manifest = tiny
    teacher = dsnet_teacher(3)
    real = runs.save_predictions

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "save_predictions", crash)
    with pytest.raises(KeyboardInterrupt):
        pipeline.distill_student(profile, manifest, teacher, verbose=0)
    monkeypatch.setattr(runs, "save_predictions", real)
    _, record = pipeline.distill_student(profile, manifest, teacher, verbose=0)
    history_rows = open(os.path.join(record["run_dir"], "history.csv")).read().strip().splitlines()
    assert len(history_rows) == 1 + 2 and len(record["epoch_seconds"]) == 2
    assert record["train_seconds"] == pytest.approx(sum(record["epoch_seconds"]))
    assert not os.path.exists(os.path.join(record["run_dir"], "lock.json"))


def test_a_run_another_live_process_writes_is_left_alone(tiny):
    profile, manifest = tiny
    teacher = dsnet_teacher(4)
    _, run_dir, _ = runs.student_run(profile, manifest.content_hash, runs.teacher_key(teacher))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "lock.json").write_text(json.dumps({"pid": other.pid, "host": storage.RunLock(run_dir).me["host"]}))
        with pytest.raises(storage.RunLockedError, match=f"pid {other.pid}"):
            pipeline.distill_student(profile, manifest, teacher, verbose=0)
        assert sorted(p.name for p in run_dir.iterdir()) == ["lock.json"]
    finally:
        other.kill()
        other.wait()


@pytest.fixture
def saved_manifest(tmp_path):
    profile = config.get_profile("smoke", image_size=32, synthetic_per_class=30)
    manifest = pipeline.prepare_data(profile)
    return profile, manifest, paths.artifacts_dir(profile) / "data"


@pytest.mark.parametrize("damage", ["edited label", "cut short", "no content hash", "images elsewhere"])
def test_a_damaged_manifest_is_refused_on_load_and_rebuilt_by_prepare_data(saved_manifest, capsys, damage):
    profile, manifest, folder = saved_manifest
    csv = folder / "manifest.csv"
    if damage == "edited label":
        frame = pd.read_csv(csv, keep_default_na=False)
        frame.loc[frame.label == 1, "label"] = 0  # every malignant image relabelled benign
        frame.to_csv(csv, index=False)
    elif damage == "cut short":
        csv.write_text("\n".join(csv.read_text().splitlines()[:10]) + "\n")
    elif damage == "images elsewhere":  # a fresh machine: the manifest (on Drive) outlived the local images
        import shutil

        shutil.rmtree(paths.data_dir())
    else:
        info = json.loads((folder / "manifest.json").read_text())
        del info["content_hash"]
        (folder / "manifest.json").write_text(json.dumps(info))
    with pytest.raises(data.DataError, match="rebuild it with notebooks/01_data_preparation"):
        pipeline.load_manifest(profile)
    rebuilt = pipeline.prepare_data(profile)
    assert "Rebuilding it now" in capsys.readouterr().out
    assert rebuilt.content_hash == manifest.content_hash
    assert pipeline.load_manifest(profile).content_hash == manifest.content_hash


def test_a_saved_manifest_missing_a_class_in_a_split_is_refused(saved_manifest):
    profile, manifest, folder = saved_manifest
    frame = manifest.frame[~((manifest.frame.split == "val") & (manifest.frame.label == 1))].reset_index(drop=True)
    # Saved consistently (hash and counts match), still not a usable dataset.
    data.Manifest(frame, manifest.report, manifest.source, dict(manifest.info)).save(folder)
    with pytest.raises(data.DataError, match="The val split has no malignant images"):
        pipeline.load_manifest(profile)


def test_zero_epochs_are_refused_before_anything_is_stored():
    for field in ("teacher_epochs", "student_epochs", "backbone_student_epochs"):
        with pytest.raises(ValueError, match=f"{field} must be a whole number of at least 1, got 0"):
            config.get_profile("smoke", **{field: 0})
    with pytest.raises(ValueError, match="got -2"):
        config.get_profile("smoke", teacher_epochs=-2)


def test_an_image_changed_on_disk_means_a_rebuilt_manifest_and_a_new_run(saved_manifest, capsys):
    """Pixels of one training image change after a run was trained: the next
    load notices (one line), rebuilds the manifest, and the run is trained
    again under a new key instead of reusing the old one."""
    profile, manifest, folder = saved_manifest
    profile = profile.replace(student_epochs=1, seeds=(1,))
    teacher = dsnet_teacher(0)
    _, before = pipeline.distill_student(profile, manifest, teacher, alpha=1.0, verbose=0)
    # Only touched: same content, nothing rebuilt, nothing said.
    first = manifest.frame[manifest.frame.split == "train"].path.iloc[0]
    os.utime(first)
    assert pipeline.load_manifest(profile).content_hash == manifest.content_hash
    assert "note:" not in capsys.readouterr().out
    # Changed: one pixel of one image.
    from PIL import Image

    with Image.open(first) as image:
        pixels = np.asarray(image.convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(first)
    with pytest.raises(data.ImagesChanged, match="1 image"):
        data.Manifest.load(folder)
    rebuilt = pipeline.load_manifest(profile)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "changed on disk" in notes[0] and "Rebuilding it now" in notes[0]
    assert rebuilt.content_hash != manifest.content_hash
    _, after = pipeline.distill_student(profile, rebuilt, teacher, alpha=1.0, verbose=0)
    assert after["key"] != before["key"] and after["run_dir"] != before["run_dir"]
    assert after["manifest_hash"] == rebuilt.content_hash
    assert pipeline.prepare_data(profile).content_hash == rebuilt.content_hash  # and it stays rebuilt


@pytest.mark.parametrize("name", ["test_predictions.npz", "history.csv", "config.json"])
def test_every_file_of_a_finished_run_is_checked_and_a_damaged_one_rebuilt(tiny, capsys, name):
    """The record holds the checksum of every file of the run; one cut short is
    reported in one line and rebuilt (from the model or the record), and the
    run is not trained again."""
    profile, manifest = tiny
    teacher = dsnet_teacher(6)
    _, first = pipeline.distill_student(profile, manifest, teacher, verbose=0)
    run_dir = Path(first["run_dir"])
    record = json.loads((run_dir / "record.json").read_text())
    assert sorted(record["sha256"]) == ["best.keras", "config.json", "history.csv", "test_predictions.npz"]
    original = (run_dir / name).read_bytes()
    (run_dir / name).write_bytes(original[: len(original) // 2])
    capsys.readouterr()
    _, again = pipeline.distill_student(profile, manifest, teacher, verbose=0)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and name in notes[0] and "rebuilt" in notes[0]
    assert again["history"] == first["history"] and again["epoch_seconds"] == first["epoch_seconds"]  # not retrained
    assert (run_dir / name).read_bytes() == original  # rebuilt to the same bytes
    assert training.damaged(run_dir, json.loads((run_dir / "record.json").read_text())) == []


def test_cached_teacher_logits_are_used_only_when_their_checksum_matches(tiny, tmp_path, capsys):
    profile, manifest = tiny
    teacher = runs.mark(dsnet_teacher(8), "teacher-key-for-this-test", tmp_path / "teacher-run")
    pipeline._LOGITS_CACHE.clear()
    computed = pipeline.teacher_logits(profile, manifest, teacher, "val")
    (cached,) = (tmp_path / "teacher-run" / "logits").glob("*.npy")
    np.save(cached, np.zeros_like(computed))  # same shape, other numbers: only the checksum can tell
    pipeline._LOGITS_CACHE.clear()
    again = pipeline.teacher_logits(profile, manifest, teacher, "val")
    assert "is damaged (its checksum differs); the teacher's logits are computed again" in capsys.readouterr().out
    np.testing.assert_array_equal(again, computed)
    pipeline._LOGITS_CACHE.clear()
    np.testing.assert_array_equal(pipeline.teacher_logits(profile, manifest, teacher, "val"), computed)
    assert "damaged" not in capsys.readouterr().out  # rewritten with its checksum: used again
    cached.with_suffix(".sha256").unlink()  # as an older version left it
    pipeline._LOGITS_CACHE.clear()
    np.testing.assert_array_equal(pipeline.teacher_logits(profile, manifest, teacher, "val"), computed)
    assert "has no checksum beside it" in capsys.readouterr().out and cached.with_suffix(".sha256").is_file()


def test_student_patience_is_in_a_runs_key_only_when_set():
    """A profile without patience keeps the keys its runs always had; with it, its runs are new ones."""
    profile = config.get_profile("kaggle-cpu")
    key, _, run_config = runs.student_run(profile, "manifest", "teacher", seed=10)
    assert "patience" not in run_config
    patient_key, _, patient = runs.student_run(profile.replace(student_patience=4), "manifest", "teacher", seed=10)
    assert patient["patience"] == 4 and patient["epochs"] == profile.student_epochs and patient_key != key
