"""Small CPU runs of the whole chain: synthetic data -> teacher -> distilled DSNet."""

import keras
import numpy as np
import pytest

from kd_utils import batches, config, data, evaluation, models, training
from kd_utils.experiments import pipeline
from kd_utils.tools import commands
from kd_utils.distillation import Distiller


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return data.build_manifest(
        "synthetic", root / "images", image_size=32, synthetic_per_class=400, work_dir=root / "converted"
    )


def test_distilled_dsnet_beats_chance_clearly(synthetic_manifest, tmp_path):
    keras.utils.set_random_seed(0)
    train, val, test = (batches.make_dataset(synthetic_manifest, s, 32, 32, seed=0) for s in data.SPLITS)
    teacher = models.build_dsnet(32)
    teacher.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy()],
    )
    teacher.fit(train, epochs=5, verbose=0)
    teacher_acc = evaluation.evaluate(teacher, test)["accuracy"]
    distiller = Distiller(student=models.build_dsnet(32), teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        metrics=[keras.metrics.CategoricalAccuracy()],
        alpha=0.1,
        temperature=10.0,
    )
    training.fit(distiller, train, val, epochs=5, run_dir=tmp_path, verbose=0)  # best epoch on validation
    record = evaluation.evaluate(distiller.student, test)
    print(f"teacher {teacher_acc:.3f}, distilled DSNet {record['accuracy']:.3f}, AUC {record['auc']['malignant']:.3f}")
    assert record["n"] == len(synthetic_manifest.split("test"))
    assert record["accuracy"] >= 0.70  # chance is 0.5
    assert record["auc"]["malignant"] >= 0.75


@pytest.mark.slow
def test_quickstart_smoke_profile_end_to_end(capsys):
    result = commands.quickstart("smoke")
    out = capsys.readouterr().out
    assert "Teacher ResNet50" in out and "DSNet (KD, T=10)" in out
    assert result["teacher"]["test"]["params"]["trainable"] == models.count_params(models.build_teacher(75, None))["trainable"]
    assert result["dsnet"]["loss"]["temperature"] == 10.0 and result["dsnet"]["loss"]["scale_by_t2"] is False
    assert 0.0 <= result["dsnet"]["test"]["accuracy"] <= 1.0
    # A second run with the same configuration is skipped and returns the stored records.
    again = commands.quickstart("smoke")
    assert again["dsnet"]["test"] == result["dsnet"]["test"]
    assert again["teacher"]["train_seconds"] == result["teacher"]["train_seconds"]


def test_precomputed_teacher_logits_travel_with_their_images(synthetic_manifest):
    profile = config.get_profile("smoke", image_size=32, batch_size=16)
    teacher = models.build_dsnet(32)
    train, val, test = pipeline.datasets(profile, synthetic_manifest, teacher=teacher)
    for x, _ in train.for_epoch(0).take(2):
        np.testing.assert_allclose(x["teacher_logits"].numpy(), np.asarray(teacher(x["images"])), rtol=1e-5, atol=1e-5)
    assert set(next(iter(val))[0]) == {"images", "teacher_logits"}
    assert next(iter(test))[0].dtype.name == "uint8"  # the test split is scored by the student alone


def test_teacher_logits_cache_never_serves_another_teacher(synthetic_manifest):
    profile = config.get_profile("smoke", image_size=32)
    first = pipeline.teacher_logits(profile, synthetic_manifest, models.build_dsnet(32), "val")
    other = models.build_dsnet(32)
    again = pipeline.teacher_logits(profile, synthetic_manifest, other, "val")
    images = np.concatenate([x.numpy() for x, _ in batches.make_dataset(synthetic_manifest, "val", 32, 64, shuffle=False)])
    np.testing.assert_allclose(again, np.asarray(other(images)), rtol=1e-5, atol=1e-5)
    assert pipeline.teacher_logits(profile, synthetic_manifest, other, "val") is again  # cached for the same teacher
    assert not np.allclose(first, again)
