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
    monkeypatch.delenv("KD_PROFILE", raising=False)
    monkeypatch.delenv("KD_ROOT", raising=False)
