import math

import keras
import numpy as np
import pytest

from kd_utils import models

# The paper's Table 2 trainable parameter counts, in millions, as printed:
# the paper truncates (42,561,026 is printed 42.5 M; DSNet's 268,898 is 0.26 M).
PAPER_TABLE2_MILLIONS = {
    "ResNet101": 42.5,
    "ResNet50": 23.5,
    "InceptionV3": 21.7,
    "VGG16": 14.7,
    "EfficientNetB0": 4.0,
    "MobileNet": 3.2,
}
# Exact counts with the teacher's head at 224x224 (pinned so a change shows).
EXACT_TRAINABLE = {
    "ResNet101": 42_561_026,
    "ResNet50": 23_542_786,
    "InceptionV3": 21_776_546,
    "VGG16": 14_716_738,
    "EfficientNetB0": 4_012_670,
    "MobileNet": 3_211_074,
}


def test_dsnet_matches_the_paper_exactly():
    model = models.build_dsnet(224)
    assert models.count_params(model) == {"total": 268_898, "trainable": 268_898, "non_trainable": 0}
    per_layer = {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}
    assert per_layer == {"conv1": 3_584, "conv2": 73_792, "conv3": 18_464, "logits": 173_058}
    assert model.output_shape == (None, 2)
    assert [l.padding for l in model.layers if isinstance(l, keras.layers.Conv2D)] == ["valid"] * 3


def test_teacher_matches_the_paper_exactly():
    teacher = models.build_teacher(224, weights=None)
    assert models.count_params(teacher) == {
        "total": 23_600_002,
        "trainable": 23_542_786,
        "non_trainable": 57_216,
    }
    head = [l.__class__.__name__ for l in teacher.layers[-4:]]
    assert head == ["GlobalAveragePooling2D", "Dropout", "BatchNormalization", "Dense"]
    assert teacher.get_layer("head_dropout").rate == 0.5


@pytest.mark.parametrize("name", sorted(PAPER_TABLE2_MILLIONS))
def test_pretrained_students_match_table_2(name):
    model = models.build_student(name, 224, weights=None)
    trainable = models.count_params(model)["trainable"]
    assert trainable == EXACT_TRAINABLE[name]
    assert math.floor(trainable / 1e5) / 10 == PAPER_TABLE2_MILLIONS[name]


def test_dsnet_is_0_26_million_as_printed():
    assert math.floor(models.count_params(models.build_dsnet())["trainable"] / 1e4) / 100 == 0.26


@pytest.mark.parametrize("name", ["DSNet", *models.BACKBONES])
def test_every_model_outputs_logits_from_raw_uint8(name):
    size = 75
    model = models.build_student(name, size, weights=None)
    batch = np.random.default_rng(0).integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    out = np.asarray(model(batch, training=False))
    assert out.shape == (3, 2)
    assert model.layers[-1].activation is keras.activations.linear
    # Logits, not probabilities: rows do not sum to one in general.
    assert not np.allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "name, module",
    [
        ("ResNet50", keras.applications.resnet50),
        ("ResNet101", keras.applications.resnet),
        ("VGG16", keras.applications.vgg16),
        ("MobileNet", keras.applications.mobilenet),
        ("InceptionV3", keras.applications.inception_v3),
        ("EfficientNetB0", keras.applications.efficientnet),
    ],
)
def test_builtin_preprocessing_equals_keras_preprocess_input(name, module):
    layer = models.Preprocess(models.BACKBONES[name].preprocess)
    raw = np.random.default_rng(1).uniform(0, 255, size=(2, 8, 8, 3)).astype(np.float32)
    expected = module.preprocess_input(raw.copy())
    np.testing.assert_allclose(np.asarray(layer(raw)), expected, rtol=1e-6, atol=1e-4)


def test_dsnet_scales_inputs_to_unit_range():
    layer = models.build_dsnet(32).get_layer("preprocess")
    np.testing.assert_allclose(np.asarray(layer(np.array([[[[0, 51, 255]]]], dtype=np.uint8))), [[[[0, 0.2, 1]]]])


def test_bad_names_and_sizes_are_explained():
    with pytest.raises(ValueError, match="expected one of: DSNet, MobileNet"):
        models.build_student("ResNet18")
    with pytest.raises(ValueError, match="InceptionV3 needs images of at least 75x75"):
        models.build_student("InceptionV3", 64)
    with pytest.raises(ValueError, match="at least 18x18"):
        models.build_dsnet(16)
    with pytest.raises(ValueError, match="Unknown preprocessing mode"):
        models.Preprocess("torchvision")


def test_missing_imagenet_weights_give_a_clear_error(monkeypatch):
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/w.h5: None -- [Errno -3] Temporary failure")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(models.WeightsUnavailableError, match=r"weights=None") as info:
        models.build_teacher(64, weights="imagenet")
    assert "run where" in str(info.value)
    assert "URL fetch failure" in str(info.value.__cause__)


def _shades_of_gray(images, p=6.0):
    """Shades of Gray by hand, in NumPy: the p-norm mean per channel divided out."""
    x = images.astype(np.float64) / 255.0
    illuminant = np.mean(x ** p, axis=(1, 2), keepdims=True) ** (1.0 / p)
    grey = np.sqrt(np.mean(illuminant ** 2, axis=-1, keepdims=True))
    return np.clip(x * grey / illuminant, 0.0, 1.0) * 255.0


def test_shades_of_gray_removes_a_colour_cast_and_leaves_a_grey_light_alone():
    rng = np.random.default_rng(0)
    skin = rng.uniform(60, 180, size=(2, 16, 16, 3)).astype(np.float32)
    layer = models.ShadesOfGray()
    out = np.asarray(layer(skin))
    np.testing.assert_allclose(out, _shades_of_gray(skin), rtol=1e-4, atol=1e-3)
    grey_light = np.repeat(skin[..., :1], 3, axis=-1)  # equal channels: nothing to correct
    np.testing.assert_allclose(np.asarray(layer(grey_light)), grey_light, atol=1e-2)
    cast = skin * np.array([1.15, 1.0, 0.8], np.float32)  # a warm light
    fixed, plain = np.asarray(layer(cast)), out
    # The cast is gone: the channels' ratios are the uncast image's (up to one brightness factor).
    np.testing.assert_allclose(fixed / fixed.mean(axis=(1, 2, 3), keepdims=True),
                               plain / plain.mean(axis=(1, 2, 3), keepdims=True), rtol=1e-3)
    with pytest.raises(ValueError, match="p must be at least 1"):
        models.ShadesOfGray(p=0.5)


def test_colour_constancy_is_a_layer_of_the_saved_model_with_no_parameters(tmp_path):
    plain = models.build_dsnet(224)
    model = models.build_dsnet(224, color_constancy=True)
    assert model.layers[1].name == "shades_of_gray" and model.count_params() == plain.count_params() == 268_898
    keras.utils.set_random_seed(0)
    small = models.build_dsnet(32, color_constancy=True)
    path = tmp_path / "dsnet.keras"
    small.save(path)
    again = keras.saving.load_model(path)
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(again(images)), np.asarray(small(images)), atol=1e-6)
    teacher = models.build_teacher(32, weights=None, color_constancy=True)
    assert teacher.get_layer("shades_of_gray") is not None
