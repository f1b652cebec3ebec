"""The offline stand-in for the teacher's ImageNet pretraining: its own run,
on generated images outside the profile's data, and part of the teacher's key."""

import keras
import pytest

from kd_utils import config
from kd_utils.experiments import pipeline, runs


@pytest.fixture
def profile():
    return config.get_profile("smoke", image_size=32, batch_size=16, teacher_epochs=1, teacher_pretrain_per_class=8,
                              teacher_pretrain_epochs=1, teacher_finetune_lr=1e-4, teacher_bn_momentum=0.9,
                              tensorboard=False)


@pytest.mark.slow
def test_the_teacher_is_pretrained_in_its_own_run_on_other_images(profile, tiny_manifest):
    teacher, record = pipeline.train_teacher(profile, tiny_manifest, verbose=0)
    pre = runs.pretraining_data(profile)
    assert pre.counts()["total"].sum() == 16
    assert set(pre.frame.sha1).isdisjoint(tiny_manifest.frame.sha1)  # none of the profile's images
    pre_key = runs.pretrain_run(profile, pre.content_hash)[0]
    assert record["pretraining"]["key"] == pre_key == record["config"]["pretrained_from"]
    assert record["pretraining"]["train_images"] == pre.counts().loc["train", "total"]
    assert record["config"]["learning_rate"] == 1e-4 and record["config"]["bn_momentum"] == 0.9
    momenta = {layer.momentum for layer in teacher._flatten_layers()
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
    # Asked again: both runs are loaded, nothing is trained.
    again_teacher, again = pipeline.train_teacher(profile, tiny_manifest, verbose=0)
    assert again["key"] == record["key"] and again["test"] == record["test"]
    # Another pretraining set makes another teacher.
    other = profile.replace(teacher_pretrain_per_class=9)
    assert runs.teacher_run(other, tiny_manifest.content_hash)[0] != record["key"]
    assert runs.teacher_run(profile.replace(teacher_pretrain_per_class=0),
                                 tiny_manifest.content_hash)[2].get("pretrained_from") is None


@pytest.mark.parametrize("field, value, message", [
    ("teacher_pretrain_per_class", -1, "teacher_pretrain_per_class must be a whole number >= 0"),
    ("teacher_pretrain_epochs", 0, "teacher_pretrain_epochs must be a whole number of at least 1"),
    ("teacher_bn_momentum", 1.0, r"teacher_bn_momentum must lie in \(0, 1\)"),
])
def test_bad_pretraining_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        config.get_profile("cpu", **{field: value})
