"""Near-copies across a dataset's own folders, on real images (the CC0 sample)
laid out as the Kaggle release is, with copies planted across its folders."""

import shutil

import pandas as pd
import pytest
from PIL import Image

from kd_utils import data, paths
from kd_utils.tools import duplicates

#: Test-folder images planted again in the training folder, altered.
PLANTED = 2


def _near_copy(src, dst):
    """What the Kaggle release holds: the same lesion resized and re-encoded."""
    with Image.open(src) as im:
        small = im.convert("RGB").resize((im.width * 9 // 10, im.height * 9 // 10), Image.Resampling.BILINEAR)
    small.save(dst, quality=80)


@pytest.fixture(scope="module")
def kaggle_like(tmp_path_factory):
    """The 24 CC0 images as train/test x benign/malignant (4 per class for test),
    plus ``PLANTED`` test images copied into train, slightly smaller and re-encoded."""
    root = tmp_path_factory.mktemp("kaggle-like") / "melanoma_cancer_dataset"
    labels = pd.read_csv(paths.sample_dir() / "labels.csv")
    planted = []
    for label, rows in labels.groupby("label"):
        name = data.CLASS_NAMES[label]
        for i, row in enumerate(rows.itertuples()):
            split = "test" if i < 4 else "train"
            (root / split / name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths.sample_dir() / row.filename, root / split / name / row.filename)
            if split == "test" and i == 0:
                copy = root / "train" / name / f"copy_{row.filename}"
                (root / "train" / name).mkdir(parents=True, exist_ok=True)
                _near_copy(paths.sample_dir() / row.filename, copy)
                planted.append(row.filename)
    return root, planted


def _manifest(root, tmp_path, split, **options):
    return data.build_manifest("folder", root, image_size=64, split=split, work_dir=tmp_path / "converted",
                               val_fraction=0.25, test_fraction=0.3, **options)


def test_the_planted_copies_are_found_across_the_datasets_own_folders(kaggle_like, tmp_path):
    root, planted = kaggle_like
    assert len(planted) == PLANTED
    manifest = _manifest(root, tmp_path, "pooled")
    report = duplicates.folder_report(manifest)
    counts = report["counts"]
    assert counts["images"] == 24 + PLANTED
    assert counts["groups"] == PLANTED and counts["images_in_groups"] == 2 * PLANTED
    assert counts["groups_across_folders"] == PLANTED and counts["test_images_with_train_copy"] == PLANTED
    examples = report["examples"]
    assert sorted(p.rsplit("/", 1)[1] for p in examples.test_image) == sorted(planted)
    assert all(p.rsplit("/", 1)[1] == "copy_" + q.rsplit("/", 1)[1]
               for p, q in zip(examples.train_image, examples.test_image))
    assert (examples.bits <= counts["bits"]).all() and (examples.label == examples.label_of_copy).all()


def test_the_pooled_split_keeps_every_group_on_one_side(kaggle_like, tmp_path):
    root, _ = kaggle_like
    for seed in (10, 11, 12):
        manifest = data.build_manifest("folder", root, image_size=64, split="pooled", seed=seed,
                                       work_dir=tmp_path / "converted", val_fraction=0.25, test_fraction=0.3)
        table = duplicates.groups(manifest)
        assert duplicates.folder_report(manifest)["counts"]["groups_across_splits"] == 0
        assert (table[table.group_size > 1].groupby("group").split.nunique() == 1).all()
        assert manifest.split_mode == "pooled" and set(manifest.frame.split) == {"train", "val", "test"}


def test_keeping_the_datasets_folders_with_the_copies_shows_them_as_leaks(kaggle_like, tmp_path):
    root, _ = kaggle_like
    kept = _manifest(root, tmp_path, "folders", remove_test_duplicates=False)
    assert duplicates.folder_report(kept)["counts"]["groups_across_splits"] == PLANTED
    removed = _manifest(root, tmp_path, "folders")
    counts = duplicates.folder_report(removed)["counts"]
    assert counts["groups_across_splits"] == 0 and counts["test_images_with_train_copy"] == 0
    assert removed.info["duplicates"]["near_removed_from_test"] == PLANTED


def test_own_folder_reads_the_layout():
    assert duplicates.own_folder("/d/TEST/benign/a.jpg", "/d") == "test"
    assert duplicates.own_folder("/d/train/malignant/x/a.jpg", "/d") == "train"
    assert duplicates.own_folder("/d/benign/a.jpg", "/d") is None


def test_a_dataset_without_copies_reports_zeros(tiny_manifest):
    """Generated images never repeat: no groups, no examples, no error."""
    report = duplicates.folder_report(tiny_manifest)
    assert report["counts"] == {"images": len(tiny_manifest.frame), "groups": 0, "images_in_groups": 0,
                                "groups_across_folders": 0, "test_images_with_train_copy": 0,
                                "groups_across_splits": 0, "bits": 4}
    assert report["examples"].empty
