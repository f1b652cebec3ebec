"""Test setup: quiet TensorFlow, keep every write inside pytest's tmp folders."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path_factory, monkeypatch):
    """Data and artifacts of a test never land in the repository."""
    root = tmp_path_factory.mktemp("kd")
    monkeypatch.setenv("KD_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("KD_ARTIFACTS", str(root / "artifacts"))
    monkeypatch.setenv("KD_RESULTS", str(root / "results"))
    monkeypatch.delenv("KD_PROFILE", raising=False)
    monkeypatch.delenv("KD_ROOT", raising=False)
    monkeypatch.delenv("KD_SEEDS", raising=False)
    monkeypatch.delenv("KD_STUDENTS", raising=False)


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory):
    """A small synthetic manifest at 32 px (2 x 60 images), built once and only read by the tests."""
    from kd_utils import data

    root = tmp_path_factory.mktemp("tiny")
    return data.build_manifest("synthetic", root / "images", image_size=32, synthetic_per_class=60,
                               work_dir=root / "converted")
