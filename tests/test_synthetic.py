"""Tests for the offline ABCD-rule synthetic lesion generator (kd_utils/synthetic.py)."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from kd_utils import synthetic as S


# ---------------------------------------------------------------- pixel features
def _radius(size):
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return np.hypot(*np.meshgrid(c, c))


def _blue_grey(x):
    """Pixels where blue dominates red and green (never true for skin, brown or hair)."""
    return (x[..., 2] - x[..., 0] > 0.03) & (x[..., 2] > x[..., 1])


def _segment(img):
    """Lesion mask: pixels clearly darker than the skin ring, largest blob, holes filled."""
    x = img.astype(np.float64) / 255.0
    lum = x.mean(-1)
    rr = _radius(img.shape[0])
    skin = np.median(lum[(rr > 0.78) & (rr < 0.92)])
    mask = (lum < 0.82 * skin) & (rr < 0.92)
    mask = ndimage.binary_opening(mask, iterations=max(1, img.shape[0] // 64))  # drop hairs
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return ndimage.binary_fill_holes(lab == np.argmax(sizes) + 1)


def _abcd_stats(img):
    """(lesion area fraction, blue-grey fraction, border irregularity) measured from pixels."""
    x = img.astype(np.float64) / 255.0
    mask = _segment(img)
    perimeter = (mask & ~ndimage.binary_erosion(mask)).sum()
    irregularity = perimeter ** 2 / (4 * np.pi * max(mask.sum(), 1))  # ~1 for a disc
    return mask.mean(), (_blue_grey(x) & mask).mean(), irregularity


def _simple_features(img):
    """Global handcrafted features: mean RGB, dark-pixel fraction, blue-grey fraction."""
    x = img.astype(np.float64) / 255.0
    inside = _radius(img.shape[0]) < 0.92
    dark = x.mean(-1) < 0.3
    return np.r_[x[inside].mean(0), dark[inside].mean(), _blue_grey(x)[inside].mean()]


# ---------------------------------------------------------------- basic contract
@pytest.mark.parametrize("size", [16, 64, 224])
def test_shape_dtype_and_content(size):
    for label in (0, 1):
        img = S.generate_image(label, size, seed=0, index=label)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert img.std() > 5  # not a constant image
    images, labels = S.generate_arrays(2, size, seed=0)
    assert images.shape == (4, size, size, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and sorted(labels.tolist()) == [0, 0, 1, 1]


def test_class_names():
    assert S.CLASS_NAMES == ("benign", "malignant")


def test_determinism_and_independence_from_batch_size():
    a, la = S.generate_arrays(3, 48, seed=5)
    b, lb = S.generate_arrays(3, 48, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, _ = S.generate_arrays(3, 48, seed=6)
    assert (a != c).any(axis=(1, 2, 3)).all()  # every image changes with the seed
    big, lbig = S.generate_arrays(7, 48, seed=5)
    np.testing.assert_array_equal(big[:6], a)
    np.testing.assert_array_equal(lbig[:6], la)
    for i in range(6):
        np.testing.assert_array_equal(S.generate_image(int(la[i]), 48, 5, i), a[i])
    assert len({img.tobytes() for img in big}) == len(big)  # no duplicates


# ---------------------------------------------------------------- ABCD statistics
@pytest.fixture(scope="module")
def dataset64():
    return S.generate_arrays(100, 64, seed=123)


def test_classes_differ_in_abcd_statistics(dataset64):
    images, labels = dataset64
    stats = np.array([_abcd_stats(img) for img in images])
    ben, mal = stats[labels == 0].mean(0), stats[labels == 1].mean(0)
    area, blue, irregular = 0, 1, 2
    assert mal[area] > 1.3 * ben[area], (ben, mal)            # D: larger
    assert mal[blue] > 3.0 * ben[blue] and mal[blue] > 0.003  # C: blue-grey regions
    assert mal[irregular] > ben[irregular] + 0.1, (ben, mal)  # A/B: irregular outline
    # colour variety: malignant lesions have a wider spread of luminance inside the lesion
    spread = []
    for img in images:
        mask = _segment(img)
        lum = img.astype(np.float64).mean(-1)[mask]
        spread.append(lum.std() if lum.size > 10 else 0.0)
    spread = np.array(spread)
    assert spread[labels == 1].mean() > spread[labels == 0].mean()


def test_classes_overlap_for_simple_classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = S.generate_arrays(250, 48, seed=1)
    x_test, y_test = S.generate_arrays(150, 48, seed=2)
    f_train = np.array([_simple_features(img) for img in x_train])
    f_test = np.array([_simple_features(img) for img in x_test])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(f_train, y_train)
    acc = clf.score(f_test, y_test)
    assert 0.65 < acc < 0.97, acc
    # no single trivial feature (mean darkness) separates the classes either
    darkness = -f_test[:, :3].mean(1)
    best = max(max(((darkness > t) == y_test).mean(), ((darkness <= t) == y_test).mean())
               for t in np.quantile(darkness, np.linspace(0.01, 0.99, 99)))
    assert best < 0.95, best


# ---------------------------------------------------------------- write_dataset
def test_write_dataset_files_and_idempotence(tmp_path):
    out = tmp_path / "syn"
    result = S.write_dataset(out, n_per_class=3, image_size=32, seed=7)
    assert result == out
    files = sorted(out.rglob("*.png"))
    assert len(files) == 6
    assert not list(out.rglob("*.tmp"))
    assert len(list((out / "benign").glob("syn_7_*.png"))) == 3
    assert len(list((out / "malignant").glob("syn_7_*.png"))) == 3
    meta = json.loads((out / "synthetic.json").read_text())
    assert meta["n_per_class"] == 3 and meta["image_size"] == 32 and meta["seed"] == 7

    images, labels = S.generate_arrays(3, 32, seed=7)
    for i, (img, label) in enumerate(zip(images, labels)):
        path = out / S.CLASS_NAMES[label] / f"syn_7_{i:05d}.png"
        with Image.open(path) as pil:
            assert pil.mode == "RGB" and pil.size == (32, 32)
            np.testing.assert_array_equal(np.asarray(pil), img)

    mtimes = {p: os.stat(p).st_mtime_ns for p in files + [out / "synthetic.json"]}
    assert S.write_dataset(str(out), 3, 32, seed=7) == out
    assert {p: os.stat(p).st_mtime_ns for p in mtimes} == mtimes

    # a missing file is regenerated, the others are left alone
    files[0].unlink()
    S.write_dataset(out, 3, 32, seed=7)
    assert files[0].exists()
    assert all(os.stat(p).st_mtime_ns == mtimes[p] for p in files[1:])


@pytest.mark.parametrize("kwargs", [dict(n_per_class=4, image_size=32, seed=7),
                                    dict(n_per_class=3, image_size=48, seed=7),
                                    dict(n_per_class=3, image_size=32, seed=8)])
def test_write_dataset_conflicting_parameters(tmp_path, kwargs):
    S.write_dataset(tmp_path, n_per_class=3, image_size=32, seed=7)
    with pytest.raises(ValueError, match="another folder|delete"):
        S.write_dataset(tmp_path, **kwargs)


# ---------------------------------------------------------------- argument validation
@pytest.mark.parametrize("call", [
    lambda: S.generate_image(2, 64, 0, 0),
    lambda: S.generate_image(-1, 64, 0, 0),
    lambda: S.generate_image(0, 15, 0, 0),
    lambda: S.generate_arrays(0, 64),
    lambda: S.generate_arrays(2, 8),
    lambda: S.generate_arrays(2, 64.5),
])
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_write_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        S.write_dataset(tmp_path / "a", n_per_class=0, image_size=32)
    with pytest.raises(ValueError):
        S.write_dataset(tmp_path / "b", n_per_class=2, image_size=10)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
