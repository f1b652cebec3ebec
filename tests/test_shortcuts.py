"""The shortcut battery: each transform does what it says to the pixels, and
a model that learnt a frame flips under the frame transform where one that
learnt the lesion's colour does not."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from kd_utils.tools import deploy, shortcuts
from kd_utils.__main__ import main

SIZE = 32


def smooth(rng, tint):
    """A smooth random texture with a colour ``tint`` (r, g, b gains)."""
    small = rng.integers(60, 200, size=(4, 4, 3)).astype(np.float32) * np.asarray(tint, np.float32)
    big = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return np.asarray(big)


def test_each_transform_changes_what_it_names_and_keeps_the_shape():
    image = np.full((SIZE, SIZE, 3), 150, np.uint8)
    for t in shortcuts.BATTERY:
        out = t.apply(image)
        assert out.shape == image.shape and out.dtype == np.uint8, t.name
    framed = shortcuts.black_frame(image, 0.75)
    assert framed[0].max() == 0 and framed[:, 0].max() == 0 and (framed[12:20, 12:20] == 150).all()
    assert (shortcuts.black_frame(image, 0.9)[5:27, 5:27] == 150).all()
    dark = shortcuts.dark_corners(image)
    assert dark[0, 0, 0] < 0.25 * 150 and (dark[14:18, 14:18] == 150).all()  # the corner pixel: r = 0.97
    assert (shortcuts.zoom_out(image) == 150).all()  # a mirrored border: no frame
    assert (shortcuts.intensity(image, 1.2) == 180).all() and (shortcuts.intensity(image, 2.0) == 255).all()
    ramp = np.tile(np.linspace(50, 250, SIZE, dtype=np.uint8)[None, :, None], (SIZE, 1, 3))
    assert shortcuts.contrast(ramp, 1.2).astype(int).std() > ramp.std() > shortcuts.contrast(ramp, 0.8).std()
    cast = shortcuts.colour_cast(image).reshape(-1, 3).mean(axis=0)
    assert cast[0] > 150 and cast[1] == 150 and cast[2] < 150
    centre = np.zeros((SIZE, SIZE, 3), np.uint8)
    centre[12:20, 12:20] = 255
    assert shortcuts.zoom_in(centre).astype(bool).sum() > centre.astype(bool).sum()  # the centre grows


def _trained(images, labels, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(images.astype(np.float32), labels, epochs=30, batch_size=32, verbose=0)
    return deploy.KerasRunner(model)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    rng.shuffle(labels)
    neutral = np.stack([smooth(rng, (1, 1, 1)) for _ in labels])
    framed = np.stack([shortcuts.black_frame(im, 0.75) if y else im for im, y in zip(neutral, labels)])
    tinted = np.stack([smooth(rng, (1.3, 0.8, 0.6) if y else (0.6, 0.8, 1.3)) for y in labels])
    return labels, framed, tinted


def test_a_model_that_learnt_the_frame_flips_under_it(data):
    labels, framed, _ = data
    runner = _trained(framed, labels)
    table = shortcuts.report(runner, framed, labels)
    assert table.loc["none", "accuracy"] > 0.9
    # every benign image gets the frame that marked malignant ones: about half the calls flip, all to malignant
    assert table.loc["frame 75%", "flipped"] > 0.35
    assert table.loc["frame 75%", "to malignant"] == pytest.approx(table.loc["frame 75%", "flipped"])
    assert table.loc["frame 75%", "called malignant"] > 0.85
    assert list(table.index) == ["none", *(t.name for t in shortcuts.BATTERY), "mirror", "quarter turn"]


def test_a_model_that_learnt_the_lesion_does_not(data):
    labels, _, tinted = data
    runner = _trained(tinted, labels)
    table = shortcuts.report(runner, tinted, labels)
    assert table.loc["none", "accuracy"] > 0.95
    assert table.loc["frame 75%", "flipped"] < 0.05 and table.loc["frame 90%", "flipped"] < 0.05
    assert table.loc["none", "flipped"] == 0.0
    # the floor: a mirror or a quarter turn leaves the tint, and the calls, as they are
    assert table.loc["mirror", "flipped"] < 0.05 and table.loc["quarter turn", "flipped"] < 0.05


def test_the_floor_mirrors_and_turns_the_image_exactly():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    mirror, turn = (t.apply for t in shortcuts.FLOOR)
    np.testing.assert_array_equal(mirror(image)[0, 0], image[0, 2])
    np.testing.assert_array_equal(mirror(mirror(image)), image)
    assert turn(image).shape == (3, 2, 3)
    np.testing.assert_array_equal(turn(image)[0, 0], image[0, 2])  # counter-clockwise: top-right to top-left
    np.testing.assert_array_equal(turn(turn(turn(turn(image)))), image)


def test_the_command_reports_a_folder_as_json(data, tmp_path, capsys):
    labels, _, tinted = data
    runner = _trained(tinted, labels)
    path = tmp_path / "tinted.keras"
    runner.model.save(path)
    for i, (im, y) in enumerate(zip(tinted[:40], labels[:40])):
        where = tmp_path / "clinic" / ("malignant" if y else "benign")
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(where / f"{i}.png")
    assert main(["shortcuts", str(path), str(tmp_path / "clinic"), "--json", "--limit", "30"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == 30 and doc["image_size"] == SIZE
    names = [row["transform"] for row in doc["transforms"]]
    assert names == ["none", *(t.name for t in (*shortcuts.BATTERY, *shortcuts.FLOOR))]
    assert main(["shortcuts", str(path), str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


def test_artefacts_by_class_count_dark_corners_frames_and_brightness(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        image = smooth(rng, (1, 1, 1))
        label = i % 2
        if label:  # every malignant image: dark corners; half of them also a black frame
            image = shortcuts.black_frame(image, 0.8) if i % 4 == 1 else shortcuts.dark_corners(image, 0.5, 0.05)
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": str(path), "label": label, "split": "train"})
    table = shortcuts.artefacts(pd.DataFrame(rows), size=32)
    assert table.loc[("train", "malignant"), "dark corners"] == 1.0
    assert table.loc[("train", "malignant"), "black frame"] == 0.5
    assert table.loc[("train", "benign"), "dark corners"] == 0.0 and table.loc[("train", "benign"), "black frame"] == 0.0
    assert table.loc[("train", "benign"), "brightness"] > table.loc[("train", "malignant"), "brightness"]
    assert table["images"].tolist() == [4, 4]


def test_artefact_rows_follow_the_splits_order_and_the_classes(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(2)
    rows = []
    for i, split in enumerate(["test", "test", "val", "train", "train", "val"]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(smooth(rng, (1, 1, 1))).save(path)
        rows.append({"path": str(path), "label": 1 - i % 2, "split": split})
    table = shortcuts.artefacts(pd.DataFrame(rows), size=32)
    assert [tuple(map(str, key)) for key in table.index] == [
        ("train", "benign"), ("train", "malignant"), ("val", "benign"), ("val", "malignant"),
        ("test", "benign"), ("test", "malignant")]


def test_marked_images_carry_dark_corners_or_a_frame(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(3)
    plain = smooth(rng, (1, 1, 1))
    images = [plain, shortcuts.dark_corners(plain, 0.5, 0.05), shortcuts.black_frame(plain, 0.8)]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    assert shortcuts.marked(pd.DataFrame({"path": paths}), size=32).tolist() == [False, True, True]


def test_accuracy_by_artefact_is_each_class_recall_on_marked_and_clean_images():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    marks = np.array([True, False, False, True, True, False, False])
    frame_reader = np.array([[0, 1, 1, 1, 1, 0, 0]])  # right exactly where the frame says "malignant"
    two_runs = np.array([[1, 1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 0, 1]])
    table = shortcuts.accuracy_by_artefact(labels, marks, {"frame reader": frame_reader, "two runs": two_runs})
    assert table["images"].tolist() == [1, 2, 2, 2, 7]
    assert table.loc[("benign", "dark corners or frame"), "frame reader"] == 0.0
    assert table.loc[("malignant", "dark corners or frame"), "frame reader"] == 1.0
    assert table.loc[("malignant", "neither"), "frame reader"] == 0.0
    assert table.loc[("benign", "neither"), "two runs"] == pytest.approx(3 / 4)
    assert table.loc[("malignant", "dark corners or frame"), "two runs"] == pytest.approx(3 / 4)
    assert table.loc[("both classes", "all"), "two runs"] == pytest.approx(11 / 14)
    with pytest.raises(ValueError, match="3 predictions for 7 images"):
        shortcuts.accuracy_by_artefact(labels, marks, {"short": np.ones((1, 3))})
    with pytest.raises(ValueError, match="7 labels but 2 artefact marks"):
        shortcuts.accuracy_by_artefact(labels, marks[:2], {})


def lit(rng, tint):
    """A smooth grey texture under a light of colour ``tint``: one colour, its brightness varying."""
    return np.round(smooth(rng, (1, 1, 1)).mean(-1, keepdims=True) * np.asarray(tint)).astype(np.uint8)


def test_the_light_colour_is_read_around_the_lesion_and_moves_by_the_log_of_a_casts_gains(tmp_path):
    skin = lit(np.random.default_rng(4), (1.0, 0.8, 0.7))
    lesion = skin.copy()
    lesion[8:24, 8:24] = (40, 60, 150)  # a blue centre, inside LIGHT_OUTSIDE of the half-diagonal
    images = {"skin": skin, "lesion": lesion, "warm": shortcuts.colour_cast(lesion),
              "framed": shortcuts.black_frame(lesion, 0.75), "grey": np.full((SIZE, SIZE, 3), 120, np.uint8)}
    light = {}
    for name, image in images.items():
        Image.fromarray(image).save(tmp_path / f"{name}.png")
        light[name] = shortcuts.light_colour(tmp_path / f"{name}.png", size=SIZE)
    assert light["grey"] == {"light red/green": pytest.approx(0, abs=1e-6), "light blue/green": pytest.approx(0, abs=1e-6)}
    assert light["skin"] == {"light red/green": pytest.approx(np.log(1 / 0.8), abs=0.02),
                             "light blue/green": pytest.approx(np.log(0.7 / 0.8), abs=0.02)}
    for key in light["skin"]:  # the centre is not read, nor the black around a shrunk image
        assert light["lesion"][key] == pytest.approx(light["skin"][key], abs=1e-9)
        assert light["framed"][key] == pytest.approx(light["skin"][key], abs=0.02)
    moved = {k: light["warm"][k] - light["lesion"][k] for k in light["lesion"]}
    assert moved["light red/green"] == pytest.approx(np.log(1.12), abs=0.01)
    assert moved["light blue/green"] == pytest.approx(np.log(0.85), abs=0.01)


def tinted_set(tmp_path, rng, tints, per_class=6):
    """Images of the three splits whose class is told by the tint of the light alone."""
    import pandas as pd

    rows = []
    for split in ("train", "val", "test"):
        for label, tint in enumerate(tints):
            for i in range(per_class):
                path = tmp_path / f"{split}-{label}-{i}.png"
                Image.fromarray(lit(rng, tint)).save(path)
                rows.append({"path": str(path), "label": label, "split": split})
    return pd.DataFrame(rows)


def test_cue_strength_finds_the_class_in_the_colour_of_the_light(tmp_path):
    frame = tinted_set(tmp_path, np.random.default_rng(5), tints=[(1.15, 1.0, 0.85), (0.9, 1.0, 1.1)])
    table = shortcuts.cue_strength(frame, size=SIZE)
    assert list(table.index) == list(shortcuts.CUES)
    assert table.columns.tolist() == ["val AUC", "val accuracy"]
    light = table.loc["colour of the light (red/green, blue/green)"]
    assert light["val AUC"] == 1.0 and light["val accuracy"] == 1.0
    assert table.loc["all of these", "val AUC"] == 1.0
    by_class = shortcuts.artefacts(frame, size=SIZE)
    assert by_class.columns.tolist() == ["images", "dark corners", "black frame", "brightness", "light red/green",
                                         "light blue/green"]
    assert (by_class.xs("benign", level="class")["light red/green"] > 0.1).all()
    assert (by_class.xs("malignant", level="class")["light red/green"] < -0.05).all()


def test_cue_strength_needs_both_classes_in_each_split(tmp_path):
    frame = tinted_set(tmp_path, np.random.default_rng(6), tints=[(1, 1, 1), (1, 1, 1)], per_class=2)
    frame = frame[(frame.split != "val") | (frame.label == 1)]
    with pytest.raises(ValueError, match="the 'val' split needs images of both classes, it has 2 of \\[1\\]"):
        shortcuts.cue_strength(frame, size=SIZE)


def test_light_shift_is_the_casts_log_gains_and_nothing_for_a_frame():
    rng = np.random.default_rng(7)
    images = np.stack([lit(rng, (1.0, 0.8, 0.7)) for _ in range(3)])
    table = shortcuts.light_shift(images)
    assert table.index.tolist() == [t.name for t in shortcuts.BATTERY]
    assert table.loc["colour cast", "red/green"] == pytest.approx(np.log(1.12), abs=0.01)
    assert table.loc["colour cast", "blue/green"] == pytest.approx(-np.log(0.85), abs=0.01)
    assert table.loc["intensity -20%"].max() < 0.01  # one colour under every transform that keeps colours
    assert table.loc["frame 75%"].max() < 0.01 and table.loc["dark corners"].max() < 0.01
    # so the layer's output of a framed image is its output of the image, framed (up to rounding)
    from kd_utils.models import ShadesOfGray

    layer = ShadesOfGray()
    assert layer.p == shortcuts.LIGHT_NORM  # the estimate light_shift measures is the layer's own
    framed_then_balanced = np.asarray(layer(shortcuts.black_frame(images[0], 0.75)[None]))[0]
    balanced = np.round(np.asarray(layer(images[:1]))[0]).astype(np.uint8)
    assert np.abs(framed_then_balanced - shortcuts.black_frame(balanced, 0.75)).max() <= 2
