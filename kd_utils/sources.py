"""Where images come from: each source proposes labelled files (:class:`Candidate`)
and lists what it cannot use (:class:`Report`) before any file is read.

* ``folder`` - ``benign/`` and ``malignant/`` folders, optionally under the
  dataset's own ``train/`` and ``test/`` (the Kaggle release's layout);
* ``isic`` - what ``isic image download`` writes, with its ``metadata.csv``;
* ``sample`` - the bundled 24 CC0 ISIC images and their ``labels.csv``;
* ``synthetic`` - the offline generator's images, written first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from . import paths, synthetic
from .images import IMAGE_SUFFIXES
from .synthetic import CLASS_NAMES

SOURCES = ("synthetic", "folder", "isic", "sample")
_ISIC_LABEL_COLUMNS = ("benign_malignant", "diagnosis_1")


class DataError(ValueError):
    """The data cannot be used; the message says what was expected and how to fix it."""


# --------------------------------------------------------------------------- candidates


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A file a source proposes, before validation."""

    path: Path
    label: int
    split: str | None = None  # the source's own split, when it has one


@dataclasses.dataclass
class Report:
    """Files converted or excluded while building a manifest."""

    rows: list = dataclasses.field(default_factory=list)

    def add(self, path, status: str, reason: str) -> None:
        self.rows.append({"path": str(path), "status": status, "reason": reason})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["path", "status", "reason"])

    def paths(self) -> set[str]:
        return {row["path"] for row in self.rows}

    def excluded(self) -> pd.DataFrame:
        frame = self.frame()
        return frame[frame.status == "excluded"].reset_index(drop=True)


def class_dirs(folder: Path) -> dict[str, Path]:
    """Sub-folders of ``folder`` by lower-case name."""
    return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _folder_candidates(root: Path, report: Report) -> list[Candidate]:
    """``root/{benign,malignant}`` or ``root/{train,test}/{benign,malignant}``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"Data folder {root} does not exist. Expected a folder with benign/ and malignant/ "
            "sub-folders (optionally under train/ and test/). Download the dataset first or "
            "set KD_DATA_DIR."
        )
    subdirs = class_dirs(root)
    # A zip often unpacks into one extra folder level: look through it.
    while len(subdirs) == 1 and not (set(subdirs) & {"train", "test", *CLASS_NAMES}):
        root = next(iter(subdirs.values()))
        subdirs = class_dirs(root)
    if "train" in subdirs or "test" in subdirs:
        missing = [s for s in ("train", "test") if s not in subdirs]
        if missing:
            raise DataError(
                f"{root} has a {'train' if 'test' in missing else 'test'}/ folder but no "
                f"{missing[0]}/ folder. Provide both train/ and test/, or put benign/ and "
                "malignant/ directly in the folder to let the project split it."
            )
        groups = [(split, subdirs[split]) for split in ("train", "test")]
        for name, path in subdirs.items():
            if name not in ("train", "test"):
                report.add(path, "excluded", "unknown folder (expected train/ and test/)")
    else:
        groups = [(None, root)]
    candidates = []
    for split, folder in groups:
        classes = class_dirs(folder)
        found = ", ".join(f"{n}/" for n in classes) or "no sub-folders"
        missing = [c for c in CLASS_NAMES if c not in classes]
        if missing:
            raise DataError(
                f"Expected class folders benign/ and malignant/ in {folder}, found {found}; "
                f"missing: {', '.join(missing)}. Put each image in the folder of its class."
            )
        for name, path in classes.items():
            if name not in CLASS_NAMES:
                report.add(path, "excluded", f"unknown class folder {path.name!r} (expected benign or malignant)")
        for label, name in enumerate(CLASS_NAMES):
            for file in _files_in(classes[name]):
                candidates.append(Candidate(file, label, split))
        for file in folder.iterdir():  # READMEs, licences, metadata are not reported
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                report.add(file, "excluded", "image outside a class folder")
    return candidates


def _isic_label(value) -> int | None:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    return {"benign": 0, "malignant": 1}.get(text)


def _isic_candidates(root: Path, report: Report) -> list[Candidate]:
    """Images written by ``isic image download`` with their ``metadata.csv``."""
    root = Path(root)
    meta_path = root / "metadata.csv"
    if not meta_path.is_file():
        raise DataError(
            f"No metadata.csv in {root}. Download with `isic image download --search ... DIR` "
            "(or `python -m kd_utils download --source isic --out DIR`), which writes the images and metadata.csv."
        )
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    column = next((c for c in _ISIC_LABEL_COLUMNS if c in meta.columns), None)
    if "isic_id" not in meta.columns or column is None:
        raise DataError(
            f"{meta_path} must have an isic_id column and one of {', '.join(_ISIC_LABEL_COLUMNS)}; "
            f"found columns: {', '.join(meta.columns)}."
        )
    candidates = []
    for isic_id, raw_label in zip(meta["isic_id"], meta[column]):
        matches = [root / f"{isic_id}{ext}" for ext in (".jpg", ".jpeg", ".JPG", ".png")]
        file = next((m for m in matches if m.is_file()), None)
        label = _isic_label(raw_label)
        if label is None:
            report.add(root / f"{isic_id}.jpg", "excluded", f"{column}={raw_label!r} is neither benign nor malignant")
        elif file is None:
            report.add(root / f"{isic_id}.jpg", "excluded", "listed in metadata.csv but the image file is missing")
        else:
            candidates.append(Candidate(file, label))
    return candidates


def _sample_candidates(root: Path, report: Report) -> list[Candidate]:
    """The bundled CC0 ISIC sample: ``labels.csv`` with filename and label."""
    root = Path(root)
    labels = pd.read_csv(root / "labels.csv")
    candidates = []
    for name, label in zip(labels["filename"], labels["label"]):
        if int(label) not in (0, 1):
            report.add(root / name, "excluded", f"label {label!r} is neither 0 (benign) nor 1 (malignant)")
        else:
            candidates.append(Candidate(root / name, int(label)))
    return candidates


def candidates(source: str, root, image_size: int, seed: int, synthetic_per_class: int, report: Report):
    """``(candidates, root)`` of ``source`` (default root: its folder in ``$KD_DATA_DIR``)."""
    if source == "synthetic":
        root = root or paths.data_dir() / f"synthetic-{image_size}px-{synthetic_per_class}x2-seed{seed}"
        synthetic.write_dataset(root, synthetic_per_class, image_size, seed)
        return _folder_candidates(root, report), root
    if source == "folder":
        root = root or paths.data_dir() / "melanoma_cancer_dataset"
        return _folder_candidates(root, report), root
    if source == "isic":
        root = root or paths.data_dir() / "isic"
        return _isic_candidates(root, report), root
    if source == "sample":
        root = root or paths.sample_dir()
        return _sample_candidates(root, report), root
    raise ValueError(f"Unknown data source {source!r}; expected one of {', '.join(SOURCES)}.")
