import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kd_utils import batches, config, data, paths
from kd_utils.tools import duplicates


def noise_image(seed, size=64, mode="RGB"):
    """A distinct smooth random picture (distinct perceptual hashes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).convert(mode)


def write_class_folder(root, n_per_class=10, start=0, size=64):
    for label, name in enumerate(data.CLASS_NAMES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            noise_image(start + 1000 * label + i, size).save(folder / f"{name}_{start + i}.jpg", quality=95)
    return root


def build(root, **kw):
    kw.setdefault("image_size", 32)
    kw.setdefault("work_dir", root.parent / "converted")
    return data.build_manifest("folder", root, **kw)


def reasons(manifest):
    return dict(zip(manifest.report.path.map(lambda p: p.split("/")[-1]), manifest.report.reason))


# --------------------------------------------------------------------------- splits


def test_flat_folder_is_split_70_30_then_20_percent_validation(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=50)
    manifest = build(root, seed=3)
    counts = manifest.counts()
    assert counts.loc["test"].tolist() == [15, 15, 30]
    assert counts.loc["val"].tolist() == [7, 7, 14]
    assert counts.loc["train"].tolist() == [28, 28, 56]
    assert manifest.report.empty
    assert list(manifest.frame.columns) == list(data.MANIFEST_COLUMNS)
    assert manifest.frame.sha1.str.len().eq(40).all() and manifest.frame.phash.str.len().eq(16).all()
    again = build(root, seed=3)
    pd.testing.assert_frame_equal(manifest.frame, again.frame)
    other = build(root, seed=4)
    assert not manifest.frame.split.equals(other.frame.split)


def test_own_train_test_split_is_kept(tmp_path):
    root = tmp_path / "melanoma_cancer_dataset"
    write_class_folder(root / "train", n_per_class=20, start=0)
    write_class_folder(root / "test", n_per_class=6, start=500)
    manifest = build(tmp_path)  # the zip's extra folder level is looked through
    test_files = set(manifest.split("test").path.map(lambda p: p.split("/")[-3]))
    assert test_files == {"test"}
    assert manifest.counts().loc["test", "total"] == 12
    assert manifest.counts().loc["val", "total"] == 8
    assert manifest.info["own_split"] is True


def test_near_duplicates_never_straddle_the_splits_made_here(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=30)
    # Five re-encoded, resized copies of the same benign pictures.
    for i in range(5):
        src = root / "benign" / f"benign_{i}.jpg"
        Image.open(src).resize((50, 50)).save(root / "benign" / f"copy_{i}.png")
    manifest = build(root)
    frame = manifest.frame.set_index(manifest.frame.path.map(lambda p: p.split("/")[-1]))
    for i in range(5):
        assert frame.loc[f"benign_{i}.jpg", "split"] == frame.loc[f"copy_{i}.png", "split"]
    assert duplicates.near_duplicate_pairs(manifest).empty


def test_duplicates_of_training_images_are_removed_from_the_given_test_split(tmp_path):
    root = tmp_path / "ds"
    write_class_folder(root / "train", n_per_class=20)
    write_class_folder(root / "test", n_per_class=6, start=500)
    shutil.copy(root / "train/benign/benign_0.jpg", root / "test/benign/exact.jpg")
    Image.open(root / "train/malignant/malignant_1.jpg").resize((60, 60)).save(root / "test/malignant/near.jpg", quality=80)
    manifest = build(root)
    why = reasons(manifest)
    assert "exact duplicate of" in why["exact.jpg"] and "benign_0.jpg" in why["exact.jpg"]
    assert "near-duplicates training image" in why["near.jpg"]
    assert manifest.counts().loc["test", "total"] == 12
    assert not manifest.frame.path.str.endswith(("exact.jpg", "near.jpg")).any()


def test_same_image_with_conflicting_labels_is_excluded(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=12)
    shutil.copy(root / "benign/benign_0.jpg", root / "malignant/looks_benign.jpg")
    manifest = build(root)
    why = reasons(manifest)
    assert "conflicting label" in why["benign_0.jpg"] and "conflicting label" in why["looks_benign.jpg"]
    assert len(manifest.frame) == 23


# --------------------------------------------------------------------------- bad files


def test_broken_files_are_excluded_and_listed(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=12)
    (root / "benign/notes.txt").write_text("not an image")
    (root / "benign/random.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    good = io.BytesIO()
    noise_image(77, 128).save(good, format="JPEG")
    (root / "malignant/truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (root / "malignant/empty.png").write_bytes(b"")
    manifest = build(root)
    why = reasons(manifest)
    assert why["notes.txt"].startswith("not an image")
    assert why["random.jpg"].startswith("not an image")
    assert "truncated" in why["truncated.jpg"]
    assert why["empty.png"].startswith("not an image")
    assert set(manifest.report.status) == {"excluded"}
    assert len(manifest.frame) == 24


def test_odd_modes_are_converted_to_8bit_rgb(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=12)
    noise_image(901).convert("L").save(root / "benign/gray.png")
    noise_image(902).convert("RGBA").save(root / "benign/rgba.png")
    noise_image(903).convert("CMYK").save(root / "malignant/cmyk.jpg")
    noise_image(904).save(root / "malignant/scan.tiff")
    sixteen = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "malignant/deep.png")
    manifest = build(root)
    report = manifest.report.set_index(manifest.report.path.map(lambda p: p.split("/")[-1]))
    for name in ["gray.png", "rgba.png", "cmyk.jpg", "scan.tiff", "deep.png"]:
        assert report.loc[name, "status"] == "converted", name
    rows = manifest.frame[manifest.frame.original_path != ""]
    assert len(rows) == 5
    for path in rows.path:
        with Image.open(path) as im:
            assert (im.format, im.mode) == ("PNG", "RGB")
    deep = rows[rows.original_path.str.endswith("deep.png")].path.item()
    pixels = np.asarray(Image.open(deep))
    # Rescaled from 16 bits, not clipped: a full gradient, mean near 127.
    assert pixels.min() == 0 and pixels.max() == 255 and 120 < pixels.mean() < 135


def test_small_images_are_excluded_or_noted_as_upscaled(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=12, size=64)
    noise_image(950, size=20).save(root / "benign/tiny.png")
    noise_image(951, size=48).save(root / "benign/small.png")
    manifest = build(root, image_size=56, min_side=32)
    why = reasons(manifest)
    assert why["tiny.png"] == "too small: 20x20 < 32 px"
    assert why["small.png"] == "upscaled from 48x48"
    assert manifest.frame.path.str.endswith("small.png").any()


# --------------------------------------------------------------------------- errors


def test_missing_class_folder_is_explained(tmp_path):
    root = tmp_path / "ds"
    write_class_folder(root)
    shutil.rmtree(root / "malignant")
    (root / "melanoma").mkdir()
    with pytest.raises(data.DataError, match=r"found benign/, melanoma/; missing: malignant"):
        build(root)


def test_missing_test_folder_is_explained(tmp_path):
    write_class_folder(tmp_path / "ds" / "train")
    with pytest.raises(data.DataError, match="no test/ folder"):
        build(tmp_path / "ds")


def test_missing_root_is_explained(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        build(tmp_path / "nowhere")


def test_a_single_usable_class_is_an_error(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=5)
    for f in (root / "malignant").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(data.DataError, match=r"found 5 benign and 0 malignant usable images \(5 files excluded"):
        build(root)


def test_unknown_class_folders_are_reported(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=12)
    (root / "nevus").mkdir()
    noise_image(5).save(root / "nevus/x.jpg")
    manifest = build(root)
    assert "unknown class folder 'nevus'" in reasons(manifest)["nevus"]
    assert not manifest.frame.path.str.contains("nevus").any()


def test_too_few_images_to_split(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=1)
    with pytest.raises(data.DataError, match="Too few images to split"):
        build(root)


# --------------------------------------------------------------------------- other sources


def write_isic(root, column, values):
    root.mkdir(parents=True)
    ids = [f"ISIC_{i:07d}" for i in range(len(values))]
    for i, isic_id in enumerate(ids):
        if i != 1:  # the second image is missing on disk
            noise_image(i).save(root / f"{isic_id}.jpg")
    pd.DataFrame({"isic_id": ids, column: values, "attribution": "Anonymous"}).to_csv(root / "metadata.csv", index=False)
    return ids


@pytest.mark.parametrize(
    "column, benign, malignant, other",
    [("benign_malignant", "benign", "malignant", "indeterminate/benign"), ("diagnosis_1", "Benign", "Malignant", "Indeterminate")],
)
def test_isic_metadata_is_parsed(tmp_path, column, benign, malignant, other):
    values = [benign, malignant, other, ""] + [benign] * 10 + [malignant] * 10
    ids = write_isic(tmp_path / "isic", column, values)
    manifest = data.build_manifest("isic", tmp_path / "isic", image_size=32, work_dir=tmp_path / "c")
    why = reasons(manifest)
    assert why[f"{ids[1]}.jpg"] == "listed in metadata.csv but the image file is missing"
    assert why[f"{ids[2]}.jpg"] == f"{column}={other!r} is neither benign nor malignant"
    assert "neither benign nor malignant" in why[f"{ids[3]}.jpg"]
    assert len(manifest.frame) == 21
    labels = dict(zip(manifest.frame.path.map(lambda p: p.split("/")[-1][:-4]), manifest.frame.label))
    assert labels[ids[0]] == 0 and labels[ids[4]] == 0 and labels[ids[-1]] == 1


def test_isic_without_label_column_is_explained(tmp_path):
    write_isic(tmp_path / "isic", "diagnosis", ["nevus"] * 4)
    with pytest.raises(data.DataError, match="one of benign_malignant, diagnosis_1"):
        data.build_manifest("isic", tmp_path / "isic")


def test_bundled_cc0_sample():
    manifest = data.build_manifest("sample", image_size=64)
    assert len(manifest.frame) == 24
    assert manifest.frame.label.value_counts().to_dict() == {0: 12, 1: 12}
    assert manifest.report.empty
    assert (paths.sample_dir() / "labels.csv").is_file() and (paths.sample_dir() / "README.md").is_file()


def test_unknown_source():
    with pytest.raises(ValueError, match="Unknown data source 'kaggle'"):
        data.build_manifest("kaggle")


def test_manifest_round_trips(tmp_path):
    manifest = build(write_class_folder(tmp_path / "ds", n_per_class=10))
    manifest.save(tmp_path / "m")
    loaded = data.Manifest.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.frame, manifest.frame, check_dtype=False)
    assert loaded.info == manifest.info and loaded.source == "folder"
    with pytest.raises(FileNotFoundError, match="01_data_preparation"):
        data.Manifest.load(tmp_path / "empty")


# --------------------------------------------------------------------------- tf.data


def test_pipeline_yields_uint8_images_and_one_hot_labels(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=20, size=70)
    manifest = build(root, image_size=40)
    test = batches.make_dataset(manifest, "test", image_size=40, batch_size=5)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in test])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.uint8 and x.shape == (12, 40, 40, 3)
    assert y.dtype == np.float32 and y.shape == (12, 2)
    np.testing.assert_array_equal(y.argmax(1), manifest.split("test").label.values)  # test keeps manifest order
    # The pixels are the file's, resized.
    first = np.asarray(Image.open(manifest.split("test").path[0]).convert("RGB").resize((40, 40), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(first - x[0]).mean() < 8
    again = np.concatenate([b.numpy() for b, _ in batches.make_dataset(manifest, "test", 40, 5)])
    np.testing.assert_array_equal(x, again)


def test_training_pipeline_shuffles_and_keeps_teacher_logits_aligned(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=20)
    manifest = build(root)
    train = manifest.split("train")
    logits = np.stack([train.label.values * 10.0, np.arange(len(train), dtype=float)], axis=1)
    ds = batches.make_dataset(manifest, "train", 32, batch_size=8, teacher_logits=logits, seed=1)
    epochs = []
    for _ in range(2):
        rows = []
        for x, y in ds:
            assert set(x) == {"images", "teacher_logits"} and x["images"].dtype.name == "uint8"
            t = x["teacher_logits"].numpy()
            np.testing.assert_array_equal(t[:, 0] / 10.0, y.numpy().argmax(1))  # logits travel with their image
            rows.extend(t[:, 1].astype(int))
        epochs.append(rows)
    assert sorted(epochs[0]) == list(range(len(train)))
    assert epochs[0] != list(range(len(train))) and epochs[0] != epochs[1]
    with pytest.raises(ValueError, match="teacher_logits must have shape"):
        batches.make_dataset(manifest, "train", 32, 8, teacher_logits=logits[:3])


# --------------------------------------------------------------------------- leakage audit


def leaky_folder(root):
    write_class_folder(root / "train", n_per_class=20)
    write_class_folder(root / "test", n_per_class=6, start=500)
    shutil.copy(root / "train/benign/benign_0.jpg", root / "test/benign/exact.jpg")
    Image.open(root / "train/malignant/malignant_1.jpg").resize((60, 60)).save(root / "test/malignant/near.jpg", quality=80)
    shutil.copy(root / "train/benign/benign_2.jpg", root / "train/benign/copy_2.jpg")  # within train
    return root


def test_leakage_audit_counts_what_was_removed_from_test(tmp_path):
    manifest = build(leaky_folder(tmp_path / "ds"))
    audit = duplicates.leakage_audit(manifest)
    assert audit["removed"]["exact_removed_from_test"] == 1
    assert audit["removed"]["near_removed_from_test"] == 1
    assert audit["removed"]["removed_from_test"] == 2
    assert audit["removed"]["exact_copies_removed"] == 2  # the test copy and the train copy
    assert audit["pairs"]["across splits"].sum() == 0
    assert manifest.info["duplicates"]["removed_from_test"] == 2  # travels with every run record
    details = " ".join(audit["examples"].detail)
    assert "benign_0.jpg" in details and "malignant_1.jpg" in details


def test_leakage_audit_finds_the_leaks_when_they_are_kept(tmp_path):
    manifest = build(leaky_folder(tmp_path / "ds"), remove_test_duplicates=False)
    audit = duplicates.leakage_audit(manifest)
    pairs = audit["pairs"]
    assert audit["removed"]["removed_from_test"] == 0
    assert pairs.loc["exact", "train-test"] + pairs.loc["exact", "val-test"] == 1
    assert pairs.loc["near", "train-test"] + pairs.loc["near", "val-test"] == 1
    assert pairs["across splits"].sum() == 2
    assert manifest.counts().loc["test", "total"] == 14
    leaks = audit["examples"][audit["examples"].what.str.contains("test")]
    assert {p.split("/")[-1] for p in leaks.image} | {d.split(" ")[0].split("/")[-1] for d in leaks.detail} >= {"exact.jpg", "near.jpg"}


def test_leakage_audit_of_a_clean_random_split(tmp_path):
    root = write_class_folder(tmp_path / "ds", n_per_class=30)
    for i in range(3):
        Image.open(root / "benign" / f"benign_{i}.jpg").resize((50, 50)).save(root / "benign" / f"copy_{i}.png")
    audit = duplicates.leakage_audit(build(root))
    pairs = audit["pairs"]
    assert pairs.loc["near"].sum() - pairs.loc["near", "across splits"] == 3  # kept together in one split
    assert pairs["across splits"].sum() == 0
    assert audit["removed"]["removed_from_test"] == 0


def _symmetries(image):
    """The eight flips and quarter turns of a square image."""
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [np.rot90(image[:, ::-1], k) for k in range(4)]


def test_augmented_epochs_are_symmetries_of_the_same_images_drawn_reproducibly(tiny_manifest):
    plain = batches.make_dataset(tiny_manifest, "train", 32, 16, seed=3, per_epoch=True)
    augmented = batches.make_dataset(tiny_manifest, "train", 32, 16, seed=3, per_epoch=True, augment="dihedral")

    def epoch(ds, k):
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds.for_epoch(k)])
        return np.concatenate(xs), np.concatenate(ys)

    x0, y0 = epoch(plain, 0)
    a0, b0 = epoch(augmented, 0)
    assert np.array_equal(y0, b0)  # same order, same labels
    assert all(any(np.array_equal(a, s) for s in _symmetries(x)) for x, a in zip(x0, a0))
    changed = np.mean([not np.array_equal(x, a) for x, a in zip(x0, a0)])
    assert 0.7 < changed < 1.0  # 7 of 8 draws change an image (the identity is one of eight)
    again, _ = epoch(augmented, 0)
    assert np.array_equal(a0, again)  # epoch 0 again: the very same batches (exact resume)
    x1, _ = epoch(plain, 1)
    a1, _ = epoch(augmented, 1)
    assert not np.array_equal(a1, x1) and not np.array_equal(a0, a1)
    with pytest.raises(ValueError, match="augment needs a shuffled per-epoch training split"):
        batches.make_dataset(tiny_manifest, "val", 32, 16, augment="dihedral")
    with pytest.raises(ValueError, match="augment must be one of"):
        batches.make_dataset(tiny_manifest, "train", 32, 16, per_epoch=True, augment="flips")


def test_robust_views_keep_size_and_dtype_and_are_drawn_reproducibly():
    """Same (seed, index): the same view; over many views each change of the
    battery shows up - black around a shrunk image, a black field, darker
    corners, brighter and darker exposures - and most views differ from the image."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(90, 200, size=(48, 48, 3)).astype(np.uint8))
    views = np.stack([batches.robust_view(image, 5, i).numpy() for i in range(200)])
    assert views.shape == (200, 48, 48, 3) and views.dtype == np.uint8
    assert np.array_equal(views[7], batches.robust_view(image, 5, 7).numpy())
    assert not np.array_equal(views[7], batches.robust_view(image, 6, 7).numpy())
    corner = views[:, :3, :3].reshape(200, -1).max(axis=1)
    middle = views[:, 22:26, 22:26].mean(axis=(1, 2, 3))
    assert 0.15 < np.mean(corner == 0) < 0.7  # black corners: zoomed out, or a circular field
    assert np.all(middle > 40)  # the centre (the lesion's place) is never blacked out
    original = image.numpy()[22:26, 22:26].mean()
    assert middle.min() < 0.9 * original and middle.max() > 1.1 * original  # exposure both ways
    assert np.mean([not np.array_equal(v, image.numpy()) for v in views]) > 0.95


def test_the_training_vignette_keeps_the_centre_and_darkens_the_corners(monkeypatch):
    """Like a dermoscope's soft-edged field: pixels within ``vignette_start`` of
    the half-diagonal untouched, the corners at ``vignette_floor`` or darker."""
    import tensorflow as tf

    only_the_vignette = {"zoom": (1.0, 1.0), "field_probability": 0.0, "vignette_probability": 1.0,
                         "vignette_start": (0.5, 0.5), "vignette_floor": (0.2, 0.2),
                         "intensity": (1.0, 1.0), "contrast": (1.0, 1.0), "hue": (0.0, 0.0)}
    for key, value in only_the_vignette.items():
        monkeypatch.setitem(batches.ROBUST, key, value)
    image = np.full((40, 40, 3), 200, np.uint8)
    view = batches.robust_view(tf.constant(image), 1, 0).numpy()
    assert np.all(view[14:26, 14:26] == 200)  # within half the half-diagonal of the centre
    assert view[0, 0, 0] <= 0.25 * 200 and view[0, 0, 0] >= 0.2 * 200 - 1
    assert view[0, 0, 0] < view[4, 4, 0] < view[0, 20, 0] < 200  # darker towards the corners


def test_channel_gains_recolour_each_channel_within_their_range_only_when_set(monkeypatch):
    import tensorflow as tf

    from kd_utils.experiments import runs

    nothing_else = {"zoom": (1.0, 1.0), "field_probability": 0.0, "vignette_probability": 0.0,
                    "intensity": (1.0, 1.0), "contrast": (1.0, 1.0), "hue": (0.0, 0.0)}
    for key, value in nothing_else.items():
        monkeypatch.setitem(batches.ROBUST, key, value)
    image = tf.constant(np.full((16, 16, 3), 100, np.uint8))
    assert np.all(batches.robust_view(image, 1, 0).numpy() == 100)
    profile = config.get_profile("kaggle-cpu-robust")
    assert "channel_gain" not in runs.view_config("robust", profile)["views"]  # keys from before it existed
    monkeypatch.setitem(batches.ROBUST, "channel_gain", (0.8, 1.25))
    assert runs.view_config("robust", profile)["views"]["channel_gain"] == [0.8, 1.25]
    gains = []
    for index in range(30):
        view = batches.robust_view(image, 1, index).numpy()
        assert np.all(view == view[0, 0])  # one gain per channel over the whole image
        gains.append(view[0, 0] / 100.0)
    gains = np.array(gains)
    assert gains.min() >= 0.8 - 0.01 and gains.max() <= 1.25 + 0.01
    assert gains.std(axis=0).min() > 0.05  # every channel varies ...
    assert np.mean(np.abs(gains[:, 0] - gains[:, 2]) > 0.02) > 0.5  # ... and not with the others


def test_robust_epochs_are_reproducible_for_exact_resume(tiny_manifest):
    augmented = batches.make_dataset(tiny_manifest, "train", 32, 16, seed=3, per_epoch=True, augment="robust")
    first = np.concatenate([x.numpy() for x, _ in augmented.for_epoch(2)])
    again = np.concatenate([x.numpy() for x, _ in augmented.for_epoch(2)])
    other = np.concatenate([x.numpy() for x, _ in augmented.for_epoch(3)])
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_the_teacher_run_records_its_augmentation_and_students_keep_their_keys():
    from kd_utils.experiments import runs

    profile = config.get_profile("kaggle-cpu")
    key, _, run_config = runs.teacher_run(profile, "m")
    assert run_config["augment"].startswith("dihedral") and run_config["image_size"] == 64
    plain_key, _, plain = runs.teacher_run(profile.replace(teacher_augment=False), "m")
    assert "augment" not in plain and plain_key != key
    assert runs.teacher_run(config.get_profile("smoke"), "m")[2].get("augment") is None
