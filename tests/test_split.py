"""The paper's split: a dataset's own train/test folders pooled and re-split
70/30 (``split="pooled"``, the paper profile) or kept (``split="folders"``)."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from kd_utils import config, data, paths, reporting
from kd_utils.experiments import pipeline
from kd_utils.tools import duplicates


def noise_image(seed, size=64):
    """A distinct smooth random picture (distinct perceptual hashes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def write_split_folders(root, train=45, test=5, copies=4):
    """``root/{train,test}/{benign,malignant}`` with a 90/10 split of its own,
    and ``copies`` near-duplicates per class: a training image re-encoded
    smaller into test/. Returns the names of the duplicate pairs."""
    pairs = []
    for label, name in enumerate(data.CLASS_NAMES):
        for split, n, start in (("train", train, 0), ("test", test, 500)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise_image(start + 1000 * label + i).save(folder / f"{name}_{split}_{i}.jpg", quality=95)
        for i in range(copies):
            original = root / "train" / name / f"{name}_train_{i}.jpg"
            copy = root / "test" / name / f"{name}_copy_{i}.jpg"
            Image.open(original).resize((56, 56)).save(copy, quality=85)
            pairs.append((original.name, copy.name))
    return pairs


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("own") / "melanoma_cancer_dataset"
    return root, write_split_folders(root)


def build(root, split, **kw):
    return data.build_manifest("folder", root, image_size=32, work_dir=root.parent / f"converted-{split}",
                               split=split, **kw)


def by_name(manifest):
    return manifest.frame.set_index(manifest.frame.path.map(lambda p: p.split("/")[-1]))


def test_pooled_re_splits_every_image_70_30_per_class_and_keeps_duplicates_together(folders):
    root, pairs = folders
    manifest = build(root, "pooled", seed=10)
    frame = by_name(manifest)
    assert len(frame) == 2 * (45 + 5 + 4)  # nothing removed: the copies stay, beside their originals
    held_out = frame.split.eq("test")
    for label in (0, 1):
        share = held_out[frame.label == label].mean()
        assert 0.25 <= share <= 0.35, share  # ~30% of each class (groups of two move together)
    own_test = frame.index.str.contains("_test_|_copy_")
    assert held_out[own_test].mean() < 1 and held_out[~own_test].any()  # both folders feed both splits
    for original, copy in pairs:
        assert frame.loc[original, "split"] == frame.loc[copy, "split"]
    assert duplicates.near_duplicate_pairs(manifest).empty
    assert manifest.info["split"] == "pooled" and manifest.split_mode == "pooled"
    assert manifest.info["own_split"] is False
    assert manifest.info["duplicates"]["removed_from_test"] == 0
    counts = manifest.counts()
    assert counts.loc["val", "total"] == pytest.approx(0.2 * (counts.loc["val", "total"] + counts.loc["train", "total"]), abs=2)
    assert not build(root, "pooled", seed=11).frame.split.equals(manifest.frame.split)


def test_folders_keeps_the_datasets_own_split(folders):
    root, pairs = folders
    manifest = build(root, "folders")
    frame = by_name(manifest)
    assert set(frame.index[frame.split == "test"]) == {f"{c}_test_{i}.jpg" for c in data.CLASS_NAMES for i in range(5)}
    assert not frame.index.str.contains("_copy_").any()  # test copies of training images are removed
    assert manifest.info["duplicates"]["near_removed_from_test"] == len(pairs)
    assert manifest.info["split"] == "folders" and manifest.split_mode == "folders"
    assert manifest.info["own_split"] is True


def test_a_source_without_own_folders_is_split_as_before_whatever_the_choice(tiny_manifest, tmp_path):
    """Synthetic data: both choices give the manifest the code gave before they existed."""
    root = tiny_manifest.info["root"]
    made = {split: data.build_manifest("synthetic", root, image_size=32, synthetic_per_class=60,
                                       work_dir=tmp_path / "converted", split=split)
            for split in config.SPLIT_MODES}
    for manifest in made.values():
        assert manifest.content_hash == tiny_manifest.content_hash
        assert manifest.info == tiny_manifest.info
        assert "split" not in manifest.info and manifest.split_mode is None
    # The split is the stratified, grouped 70/30 then 80/20 of every usable image, as it always was.
    frame = tiny_manifest.frame
    groups = data.duplicate_groups(list(frame.phash), list(frame.sha1), tiny_manifest.info["near_duplicate_bits"])
    labels = frame.label.to_numpy()
    expected = np.where(data._stratified_group_split(groups, labels, 0.3, 10), "test", "train").astype(object)
    train = np.flatnonzero(expected == "train")
    expected[train[data._stratified_group_split(groups[train], labels[train], 0.2, 10)]] = "val"
    assert frame.split.tolist() == expected.tolist()


def test_profiles_choose_the_split_and_a_bad_value_is_refused():
    assert config.get_profile("paper").split == "pooled"
    assert {config.get_profile(n).split for n in ("cpu", "smoke")} <= set(config.SPLIT_MODES)
    assert config.get_profile("paper", split="folders").split == "folders"
    with pytest.raises(ValueError, match="split must be one of 'pooled', 'folders'.*got 'random'"):
        config.get_profile("paper", split="random")
    with pytest.raises(ValueError, match="split must be one of"):
        data.build_manifest("sample", split="own")


def test_prepare_data_rebuilds_a_saved_manifest_of_the_other_split(folders, capsys):
    root, _ = folders
    profile = config.get_profile("smoke", data_source="folder", image_size=32, split="folders")
    kept = pipeline.prepare_data(profile, root)
    assert kept.split_mode == "folders"
    assert pipeline.prepare_data(profile, root).content_hash == kept.content_hash  # reused as it is
    pooled = pipeline.prepare_data(profile.replace(split="pooled"), root)
    assert pooled.split_mode == "pooled" and pooled.content_hash != kept.content_hash
    assert "uses split 'folders', the profile 'smoke' asks for 'pooled'" in capsys.readouterr().out
    assert data.Manifest.load(paths.artifacts_dir(profile) / "data").split_mode == "pooled"


def test_a_manifest_saved_before_the_choice_existed_counts_as_folders(folders):
    root, _ = folders
    manifest = build(root, "folders")
    old = dataclasses.replace(manifest, info={k: v for k, v in manifest.info.items() if k != "split"})
    assert old.split_mode == "folders"


def test_every_table_label_names_the_split(folders, tiny_manifest):
    root, _ = folders
    paper = config.get_profile("paper")
    assert "| data folder | split pooled 70/30 |" in reporting.label(paper, "folder")
    assert "| split dataset folders |" in reporting.label(paper.replace(split="folders"), "folder")
    assert "| data synthetic | split stratified 70/30 |" in reporting.label("smoke", "synthetic")
    assert "| split stratified 70/30 |" in reporting.label(paper, "isic")
    # From a manifest: the split it records, whatever the profile says.
    assert "| data folder | split dataset folders |" in reporting.label(paper, build(root, "folders"))
    assert "| data synthetic | split stratified 70/30 |" in reporting.label("cpu", tiny_manifest)
    assert reporting.split_label(paper.replace(test_fraction=0.25), "folder") == "split pooled 75/25"
