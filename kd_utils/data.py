"""A source's candidate files (:mod:`kd_utils.sources`) -> one validated manifest.

Every source (``synthetic``, ``folder``, ``isic``, ``sample``) ends in the same
:class:`Manifest`: one row per usable image with its ``path``, ``label``
(0 benign, 1 malignant), ``split`` (``train`` / ``val`` / ``test``), the
``sha1`` of the file and a 64-bit perceptual hash (``phash``), plus a
validation ``report`` that lists every file that was converted or excluded,
and why. Nothing is dropped silently.

Rules applied to every file:

* unreadable, truncated or non-image files are excluded;
* grayscale, RGBA, palette, CMYK, 16-bit and formats TensorFlow cannot decode
  (TIFF, WebP, ...) are converted to an 8-bit RGB PNG in ``work_dir``; the
  manifest points at the converted copy and keeps ``original_path``;
* images smaller than ``min_side`` (:data:`kd_utils.images.MIN_SIDE`, 32 px) on their short
  side, or more elongated than :data:`kd_utils.images.MAX_ASPECT` (4:1), are excluded; images
  smaller than the training size are kept and noted as upscaled;
* an EXIF orientation tag (phones, some cameras) is applied: such a file is
  stored upright as an 8-bit RGB PNG in ``work_dir``, as a viewer shows it
  (``deploy.read_image`` does the same for prediction);
* exact duplicates (same sha1) are kept once; copies of one image with
  conflicting labels are all excluded;
* near duplicates (perceptual hashes within ``near_duplicate_bits``) never
  straddle splits: splits made here keep each duplicate group together, and
  when the source brings its own train/test split, test images that
  duplicate a training image are removed from test.

Splits: a stratified ``test_fraction`` (0.3, as the paper) test split made
here, duplicate groups kept whole; a source with its own train/test folders
keeps them with ``split="folders"`` and is pooled and re-split like the
others with ``split="pooled"`` (the paper's way, the ``paper`` profile's
choice). Validation is a stratified ``val_fraction`` (0.2) of train. All
seeded. The manifest's images become ``tf.data`` pipelines in
:mod:`kd_utils.batches`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from . import config, paths, sources, storage, synthetic
from .images import (MIN_SIDE, exif_orientation, hamming_matrix, perceptual_hash, shown_size, size_problem,
                     upright_rgb8)
from .sources import Candidate, DataError, Report

CLASS_NAMES = synthetic.CLASS_NAMES  # ("benign", "malignant"): label 0, label 1
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "split", "sha1", "phash", "width", "height", "original_path", "note")
#: Formats and modes the tf.data decoder reads as they are.
_DIRECT_FORMATS = {"JPEG", "PNG"}



class ImagesChanged(DataError):
    """Images on disk no longer match the sha1 the manifest holds for them."""


@dataclasses.dataclass
class _Checked:
    candidate: Candidate
    status: str  # ok | converted | excluded
    reason: str = ""
    path: Path | None = None
    sha1: str = ""
    phash: str = ""
    width: int = 0
    height: int = 0


def _check_file(candidate: Candidate, work_dir: Path, min_side: int, image_size: int) -> _Checked:
    path = candidate.path
    try:
        data = path.read_bytes()
    except OSError as err:
        return _Checked(candidate, "excluded", f"cannot read file: {err}")
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        with Image.open(path) as image:
            fmt, mode = image.format, image.mode
            image.load()  # raises on truncated data
            width, height = shown_size(image)
            problem = size_problem(width, height, min_side)
            if problem:
                return _Checked(candidate, "excluded", problem, sha1=sha1)
            orientation = exif_orientation(image)
            # tf.io.decode_image ignores EXIF: a rotated file is stored upright instead.
            needs_conversion = fmt not in _DIRECT_FORMATS or mode != "RGB" or orientation != 1
            rgb = upright_rgb8(image) if needs_conversion else image
            phash = perceptual_hash(rgb)
            out_path, status, reason = path, "ok", ""
            if needs_conversion:
                work_dir.mkdir(parents=True, exist_ok=True)
                out_path = work_dir / f"{sha1}.png"
                if not out_path.exists():
                    rgb.save(out_path, format="PNG")
                status, reason = "converted", f"converted {fmt} {mode} to 8-bit RGB PNG"
                if orientation != 1:
                    reason += f" (EXIF orientation {orientation} applied)"
    except UnidentifiedImageError:
        return _Checked(candidate, "excluded", "not an image (unknown format)", sha1=sha1)
    except (OSError, SyntaxError, ValueError) as err:
        return _Checked(candidate, "excluded", f"unreadable or truncated image: {err}", sha1=sha1)
    if min(width, height) < image_size:
        reason = "; ".join(filter(None, [reason, f"upscaled from {width}x{height}"]))
    return _Checked(candidate, status, reason, out_path, sha1, phash, width, height)


def _check_all(candidates, work_dir, min_side, image_size, workers=None) -> list[_Checked]:
    workers = workers or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: _check_file(c, work_dir, min_side, image_size), candidates))


# --------------------------------------------------------------------------- duplicates and splits


def duplicate_groups(phashes: list[str], sha1s: list[str], max_bits: int) -> np.ndarray:
    """Connected components of 'same sha1 or phash within ``max_bits``' (union-find)."""
    n = len(phashes)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first_by_sha = {}
    for i, sha in enumerate(sha1s):
        if sha in first_by_sha:
            union(first_by_sha[sha], i)
        else:
            first_by_sha[sha] = i
    chunk = 1024
    for start in range(0, n, chunk):
        dist = hamming_matrix(phashes[start : start + chunk], phashes)
        rows, cols = np.nonzero(dist <= max_bits)
        for r, c in zip(rows + start, cols):
            if r < c:
                union(r, c)
    return np.array([find(i) for i in range(n)])


def _stratified_group_split(groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows that go to the held-out part; groups stay whole."""
    from sklearn.model_selection import train_test_split

    unique, first = np.unique(groups, return_index=True)
    group_labels = labels[first]
    counts = np.bincount(group_labels, minlength=2)
    if counts.min() < 2:
        raise DataError(
            f"Too few images to split: {counts[0]} benign and {counts[1]} malignant distinct images "
            "after validation. Each class needs at least 2 (in practice hundreds)."
        )
    _, held_out = train_test_split(unique, test_size=fraction, stratify=group_labels, random_state=seed)
    return np.isin(groups, held_out)


@dataclasses.dataclass
class Manifest:
    """The validated dataset: ``frame`` (one row per image) and ``report``."""

    frame: pd.DataFrame
    report: pd.DataFrame
    source: str
    info: dict = dataclasses.field(default_factory=dict)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return self.frame[self.frame.split == name].reset_index(drop=True)

    @property
    def split_mode(self) -> str | None:
        """``"pooled"`` or ``"folders"`` (see :func:`build_manifest`) for a source
        with its own train/test folders - manifests saved before the choice
        existed kept the folders - and None for a source split here in any case."""
        return self.info.get("split") or ("folders" if self.info.get("own_split") else None)

    def count_dict(self) -> dict:
        """:meth:`counts` as ``{split: {class or "total": n}}`` (what ``manifest.json`` stores)."""
        return {split: {name: int(n) for name, n in row.items()} for split, row in self.counts().iterrows()}

    def counts(self) -> pd.DataFrame:
        """Images per split and class."""
        table = pd.crosstab(self.frame.split, self.frame.label).reindex(index=list(SPLITS), columns=[0, 1])
        table = table.fillna(0).astype(int)
        table.columns = list(CLASS_NAMES)
        table["total"] = table.sum(axis=1)
        return table

    @property
    def content_hash(self) -> str:
        """sha256 of every row's file name, label, split and sha1, in manifest order.

        It names the data in run keys (a changed image, label or split means new
        runs) and detects a manifest edited or cut short after it was saved.
        Only the file name enters, so the same images moved to another folder
        (a local copy of a Drive folder) keep their hash.
        """
        digest = hashlib.sha256()
        for path, label, split, sha1 in zip(self.frame.path, self.frame.label, self.frame.split, self.frame.sha1):
            digest.update(f"{Path(path).name}|{int(label)}|{split}|{sha1}\n".encode())
        return digest.hexdigest()

    def sources(self) -> list[str]:
        """Each row's file as read when the manifest was built: its sha1 is of this file
        (``original_path`` for a converted image, else ``path``)."""
        return [o or p for p, o in zip(self.frame.path, self.frame.original_path)]

    def save(self, folder) -> Path:
        """Write ``manifest.csv``, ``validation_report.csv``, the size and
        modification time of every image (``image_stats.json``, see
        :func:`changed_images`) and, last, ``manifest.json`` with the content
        hash and counts; each atomically."""
        folder = Path(folder)
        storage.write_text(folder / "manifest.csv", self.frame.to_csv(index=False))
        storage.write_text(folder / "validation_report.csv", self.report.to_csv(index=False))
        storage.write_json(folder / IMAGE_STATS, {path: _stat(path) for path in self.sources()})
        storage.write_json(folder / "manifest.json", {"source": self.source, **self.info,
                                                       "content_hash": self.content_hash,
                                                       "counts": self.count_dict()})
        return folder

    @classmethod
    def load(cls, folder) -> "Manifest":
        """Read a saved manifest and validate it as when it was built: its content
        hash and counts match ``manifest.json`` and every split has both classes;
        otherwise a :class:`DataError` says what is wrong and how to rebuild."""
        folder = Path(folder)
        if not (folder / "manifest.csv").is_file():
            raise FileNotFoundError(
                f"No manifest in {folder}: run notebooks/01_data_preparation first "
                "(or kd_utils.data.build_manifest(...).save(folder))."
            )
        rebuild = "rebuild it with notebooks/01_data_preparation (or kd_utils.experiments.pipeline.prepare_data(profile, rebuild=True))"
        info = storage.read_json(folder / "manifest.json")
        if not isinstance(info, dict) or "content_hash" not in info:
            raise DataError(f"{folder / 'manifest.json'} is missing, damaged or from an older version "
                            f"(no content hash): {rebuild}.")
        text = {"path": str, "split": str, "sha1": str, "phash": str, "original_path": str, "note": str}
        try:
            frame = pd.read_csv(folder / "manifest.csv", dtype=text, keep_default_na=False)
            report = pd.read_csv(folder / "validation_report.csv", dtype=str, keep_default_na=False)
            missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"columns {missing} are missing")
            frame["label"] = frame["label"].astype(np.int64)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise DataError(f"{folder / 'manifest.csv'} cannot be read ({err}): {rebuild}.") from None
        expected = info.pop("content_hash")
        saved_counts = info.pop("counts", None)
        manifest = cls(frame=frame, report=report, source=info.pop("source"), info=info)
        if manifest.content_hash != expected:
            raise DataError(f"{folder / 'manifest.csv'} does not match its manifest.json (content hash differs: "
                            f"it was edited or cut short after it was saved): {rebuild}.")
        counts = manifest.count_dict()
        if saved_counts is not None and counts != saved_counts:
            raise DataError(f"{folder / 'manifest.csv'} counts {counts} differ from the saved {saved_counts}: {rebuild}.")
        _check_splits(manifest)
        missing = [p for p in frame.path if not os.path.isfile(p)]
        if missing:  # e.g. a manifest on Drive, its images on another machine's local disk
            raise DataError(f"{len(missing)} of the {len(frame)} images in {folder / 'manifest.csv'} are not on this "
                            f"machine (e.g. {missing[0]}): {rebuild}.")
        changed = changed_images(manifest, folder)
        if changed:
            raise ImagesChanged(f"{len(changed)} image(s) listed in {folder / 'manifest.csv'} changed on disk since it "
                                f"was built (e.g. {changed[0]}: its content no longer matches its sha1; runs on the new "
                                f"content get new keys): {rebuild}.")
        manifest.info["content_hash"] = expected
        return manifest


IMAGE_STATS = "image_stats.json"


def _stat(path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def changed_images(manifest: "Manifest", folder) -> list[str]:
    """The images whose content is no longer the manifest's (their sha1 differs).

    An image whose size and modification time are those saved in
    ``image_stats.json`` is taken as unchanged; any other (or all, when that
    file is missing) is hashed again, and the saved size and time of those
    that still match are updated. Run before every training run and before
    teacher logits are computed (:func:`kd_utils.experiments.pipeline.prepare_data` and
    ``load_manifest`` load the manifest through :meth:`Manifest.load`)."""
    folder = Path(folder)
    saved = storage.read_json(folder / IMAGE_STATS)
    saved = saved if isinstance(saved, dict) else {}
    changed, updated = [], {}
    for source, sha1 in zip(manifest.sources(), manifest.frame.sha1):
        now = _stat(source)
        if saved.get(source) == now:
            continue
        with open(source, "rb") as f:
            if hashlib.sha1(f.read()).hexdigest() != sha1:
                changed.append(source)
                continue
        updated[source] = now
    if updated and not changed:
        storage.write_json(folder / IMAGE_STATS, {**saved, **updated})
    return changed


def build_manifest(
    source: str,
    root=None,
    *,
    image_size: int = 224,
    seed: int = 10,
    val_fraction: float = 0.2,
    test_fraction: float = 0.3,
    near_duplicate_bits: int = 4,
    min_side: int = MIN_SIDE,
    work_dir=None,
    synthetic_per_class: int = 1000,
    remove_test_duplicates: bool = True,
    split: str = "folders",
) -> Manifest:
    """Validate a source's files, remove duplicates, split; see the module docstring.

    ``remove_test_duplicates=False`` keeps test images of a source's own split
    that (near-)duplicate a training image, noted in the report, so that the
    leak can be measured; :func:`kd_utils.tools.duplicates.leakage_audit` then lists them.

    ``split`` decides what happens to a source's own train/test folders:
    ``"folders"`` keeps them, ``"pooled"`` pools their images and splits them
    here (stratified ``test_fraction``, duplicate groups whole). The choice is
    stored as ``info["split"]`` when the source has such folders; a source
    without them is split here either way and its manifest does not change.
    """
    split_mode = split  # the name ``split`` is the split column below
    if split_mode not in config.SPLIT_MODES:
        raise ValueError(f"split must be one of {', '.join(map(repr, config.SPLIT_MODES))}, got {split_mode!r}.")
    report = Report()
    candidates, root = sources.candidates(source, root, image_size, seed, synthetic_per_class, report)
    has_own_split = any(c.split is not None for c in candidates)
    if split_mode == "pooled" and has_own_split:
        candidates = [dataclasses.replace(c, split=None) for c in candidates]
    work_dir = Path(work_dir) if work_dir else paths.data_dir() / "converted"
    checked = _check_all(candidates, work_dir, min_side, image_size)
    for item in checked:
        if item.status != "ok" or item.reason:
            report.add(item.candidate.path, "kept" if item.status == "ok" else item.status, item.reason)
    usable = [c for c in checked if c.status != "excluded"]
    before = len(usable)
    usable, exact_from_test, conflicting = _drop_exact_duplicates(usable, report, remove_test_duplicates)
    duplicates = {
        "exact_copies_removed": before - len(usable) - conflicting,
        "conflicting_labels_excluded": conflicting,
        "exact_removed_from_test": exact_from_test,
        "near_removed_from_test": 0,
        "remove_test_duplicates": bool(remove_test_duplicates),
    }
    labels = np.array([c.candidate.label for c in usable], dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        found = f"{counts[0]} benign and {counts[1]} malignant usable images"
        excluded = len(report.excluded())
        raise DataError(
            f"Need images of both classes (benign and malignant) in {root}; found {found}"
            f" ({excluded} files excluded, see the report). Check the class folders / labels."
        )
    groups = duplicate_groups([c.phash for c in usable], [c.sha1 for c in usable], near_duplicate_bits)
    own_split = np.array([c.candidate.split for c in usable], dtype=object)
    if any(s is not None for s in own_split):
        split = np.where(own_split == "test", "test", "train").astype(object)
        keep = _drop_test_leaks(usable, groups, split, report, remove_test_duplicates)
        duplicates["near_removed_from_test"] = int((~keep).sum())
        usable, groups, labels, split = [c for c, k in zip(usable, keep) if k], groups[keep], labels[keep], split[keep]
    else:
        split = np.where(_stratified_group_split(groups, labels, test_fraction, seed), "test", "train").astype(object)
    train = np.flatnonzero(split == "train")
    val_mask = _stratified_group_split(groups[train], labels[train], val_fraction, seed)
    split[train[val_mask]] = "val"
    frame = pd.DataFrame(
        {
            "path": [str(c.path) for c in usable],
            "label": labels,
            "split": split.astype(str),
            "sha1": [c.sha1 for c in usable],
            "phash": [c.phash for c in usable],
            "width": [c.width for c in usable],
            "height": [c.height for c in usable],
            "original_path": [str(c.candidate.path) if c.status == "converted" else "" for c in usable],
            "note": [c.reason for c in usable],
        },
        columns=list(MANIFEST_COLUMNS),
    )
    manifest = Manifest(
        frame=frame,
        report=report.frame(),
        source=source,
        info={
            "root": str(root),
            "image_size": image_size,
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "near_duplicate_bits": near_duplicate_bits,
            "own_split": bool(any(s is not None for s in own_split)),
            "duplicates": {**duplicates, "removed_from_test": duplicates["exact_removed_from_test"]
                           + duplicates["near_removed_from_test"]},
        },
    )
    if has_own_split:
        manifest.info["split"] = split_mode
    _check_splits(manifest)
    manifest.info["content_hash"] = manifest.content_hash
    return manifest


def _drop_exact_duplicates(usable: list[_Checked], report: Report, remove_from_test: bool = True):
    """``(kept, copies removed from the source's test split, files excluded for conflicting labels)``."""
    by_sha: dict[str, list[_Checked]] = {}
    for item in usable:
        by_sha.setdefault(item.sha1, []).append(item)
    kept, from_test, conflicting = [], 0, 0
    for copies in by_sha.values():
        if len({c.candidate.label for c in copies}) > 1:
            for c in copies:
                report.add(c.candidate.path, "excluded", f"same image as {len(copies) - 1} other file(s) with a conflicting label")
            conflicting += len(copies)
            continue
        # Keep a training copy where the source's own split has one.
        first, *others = sorted(copies, key=lambda c: c.candidate.split == "test")
        for c in others:
            leak = c.candidate.split == "test" and first.candidate.split != "test"
            if leak and not remove_from_test:
                report.add(c.candidate.path, "kept", f"test image is an exact duplicate of training image {first.candidate.path}")
                kept.append(c)
                continue
            from_test += leak
            report.add(c.candidate.path, "excluded", f"exact duplicate of {first.candidate.path}")
        kept.append(first)
    order = {id(item): i for i, item in enumerate(usable)}
    return sorted(kept, key=lambda c: order[id(c)]), int(from_test), conflicting


def _drop_test_leaks(usable, groups, split, report: Report, remove: bool = True) -> np.ndarray:
    """Keep mask: test images in a duplicate group with a training image go (or are noted)."""
    train_groups = set(groups[split == "train"])
    keep = np.ones(len(usable), dtype=bool)
    for i in np.flatnonzero(split == "test"):
        if groups[i] in train_groups:
            partner = next(usable[j].candidate.path for j in np.flatnonzero(groups == groups[i]) if split[j] == "train")
            if not remove:
                if str(usable[i].candidate.path) not in report.paths():
                    report.add(usable[i].candidate.path, "kept", f"test image near-duplicates training image {partner}")
                continue
            keep[i] = False
            report.add(usable[i].candidate.path, "excluded", f"test image near-duplicates training image {partner}")
    return keep


def _check_splits(manifest: Manifest) -> None:
    counts = manifest.counts()
    for split in SPLITS:
        empty = [c for c in CLASS_NAMES if counts.loc[split, c] == 0]
        if empty:
            raise DataError(
                f"The {split} split has no {' or '.join(empty)} images after validation "
                f"(counts per split:\n{counts}\n). Add images of that class or check the labels."
            )
