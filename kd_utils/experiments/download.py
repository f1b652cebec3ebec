"""The paper's data, one call away: the Kaggle dataset or ISIC Archive images.

``download("kaggle")`` (the default; ``python -m kd_utils download``) fetches
the public Kaggle dataset "Melanoma Skin Cancer Dataset of 10000 Images"
(:data:`KAGGLE_HANDLE`) with ``kagglehub`` and copies it to where the
``paper`` profile reads it, ``<data dir>/melanoma_cancer_dataset/`` with
``train/`` and ``test/``, each holding ``benign/`` and ``malignant/``. The
image count of each of these four folders is checked against
:data:`KAGGLE_COUNTS`; a difference is reported (:attr:`Download.problems`),
never passed over in silence. A second call finds the copy complete and
does nothing.

``download("isic")`` fetches ISIC Archive images and their ``metadata.csv``
with ``isic-cli`` into ``<data dir>/isic/`` (the ``isic`` source).

Credentials. The Kaggle dataset is public: ``kagglehub`` downloads it
without a Kaggle account. Kaggle asks for one only for private data or
data that need consent, and may ask anonymous users to sign in when they
download a lot; kagglehub then reads an API token (Kaggle, Settings, API,
"Create New Token") from ``~/.kaggle/kaggle.json`` (or
``$KAGGLE_CONFIG_DIR/kaggle.json``), from the environment variables
``KAGGLE_USERNAME`` and ``KAGGLE_KEY`` (newer tokens: ``KAGGLE_API_TOKEN``)
or, on Colab, from the notebook's secrets of the same names (the key icon in
the left bar; allow the notebook to read them). ``isic-cli`` needs no account
for public images.

Nothing here imports TensorFlow. Without network, without ``kagglehub`` or
``isic-cli``, or when Kaggle refuses, a :class:`DownloadError` says what to
do (the command line prints it as one line and exits with 2).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from .. import config, paths, storage
from ..data import CLASS_NAMES, DataError
from ..images import IMAGE_SUFFIXES

SOURCES = ("kaggle", "isic")
#: The Kaggle dataset the paper's 9,996 images come from (owner/slug).
KAGGLE_HANDLE = config.KAGGLE_HANDLE
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE}"
#: Where the ``paper`` profile's ``folder`` source looks, under the data dir.
DATASET_FOLDER = config.KAGGLE_FOLDER
#: Images per folder of the Kaggle dataset as published (train 9,605, test
#: 1,000). The paper used 9,996 of its images (5,000 benign, 4,996
#: malignant), pooled and re-split 70/30; see docs/deviations.md.
KAGGLE_COUNTS = {"train/benign": 5000, "train/malignant": 4605, "test/benign": 500, "test/malignant": 500}
#: Written last into the copy: the download finished (handle, counts).
MARKER = ".kd_download.json"
#: ``isic image download`` search of every benign or malignant image.
ISIC_SEARCH = "benign_malignant:benign OR benign_malignant:malignant"
_SPLITS = ("train", "test")


class DownloadError(DataError):
    """The data could not be fetched; the message says why and what to do."""


@dataclasses.dataclass
class Download:
    """What :func:`download` left on disk."""

    source: str
    folder: Path
    #: Images per ``split/class`` folder (kaggle) or listed images (isic: ``{"images": n}``).
    counts: dict
    #: The counts expected; empty when nothing is checked.
    expected: dict
    #: True when the data were already there and complete: nothing was fetched.
    skipped: bool = False

    @property
    def problems(self) -> list[str]:
        """Each folder whose image count differs from the expected one."""
        return [f"{name}: {self.counts.get(name, 0)} images, expected {n}"
                for name, n in self.expected.items() if self.counts.get(name, 0) != n]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """A few lines for a person: where, how many, and any difference."""
        what = "already complete, nothing downloaded" if self.skipped else "downloaded"
        lines = [f"{self.source}: {self.folder} ({what})"]
        for name, n in self.counts.items():
            want = self.expected.get(name, n)
            lines.append(f"  {name:<16} {n:>6}" + (f"  expected {want}" if want != n else ""))
        lines.append(f"  {'total':<16} {sum(self.counts.values()):>6}")
        if self.problems:
            lines.append(f"The image counts differ from the published dataset in {len(self.problems)} folder(s): "
                         "the download may be incomplete (run it again with force=True, or --force) or the dataset "
                         "has changed since; notebook 01's manifest reports what it uses.")
        return "\n".join(lines)


def dataset_folder() -> Path:
    """``<data dir>/melanoma_cancer_dataset``: where the ``paper`` profile reads its images."""
    return paths.data_dir() / DATASET_FOLDER


def count_images(folder) -> dict[str, int]:
    """Image files in each ``train|test / benign|malignant`` folder of ``folder`` (0 where missing)."""
    folder = Path(folder)
    counts = {}
    for split in _SPLITS:
        for name in CLASS_NAMES:
            where = folder / split / name
            counts[f"{split}/{name}"] = sum(
                1 for p in where.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ) if where.is_dir() else 0
    return counts


def is_complete(folder=None) -> bool:
    """A finished download is in ``folder`` (default :func:`dataset_folder`) and
    its folders still hold the images counted when it finished."""
    folder = Path(folder) if folder else dataset_folder()
    marker = storage.read_json(folder / MARKER)
    return isinstance(marker, dict) and marker.get("counts") == count_images(folder)


def download(source: str = "kaggle", dest=None, *, force: bool = False, **options) -> Download:
    """Fetch the ``paper`` profile's images; see the module docstring.

    ``source``: ``"kaggle"`` (:func:`download_kaggle`) or ``"isic"``
    (:func:`download_isic`); ``dest``: the folder (default: where the
    profile looks); ``force``: fetch again even when complete; ``options``
    go to the source's function (``limit`` for isic, ``expected`` for kaggle).
    """
    if source == "kaggle":
        return download_kaggle(dest, force=force, **options)
    if source == "isic":
        return download_isic(dest, force=force, **options)
    raise ValueError(f"Unknown download source {source!r}; expected one of {', '.join(SOURCES)}.")


def ensure_data(profile: config.Profile) -> Download | None:
    """The profile's real images, fetched when missing (notebook 01,
    ``reproduce`` and :func:`kd_utils.experiments.pipeline.prepare_data` call this).

    The ``folder`` (Kaggle) and ``isic`` sources download (``paper``,
    ``colab``, ``kaggle-cpu``): when their folder is missing or a download
    into it was cut short. A failed download raises :class:`DownloadError`
    (one line: why, and what to do); nothing falls back to generated images.
    Synthetic or bundled data, data in place, or a folder filled by hand:
    nothing is done and None is returned. So is a profile that names its own
    data folder (``data_root``; the dry run's stand-ins).
    """
    if profile.data_root or profile.stand_ins:
        return None
    if profile.data_source == "isic":
        if (paths.data_dir() / "isic" / "metadata.csv").is_file():
            return None
        return download_isic()
    folder = dataset_folder()
    started = (folder / MARKER).is_file()  # by download_kaggle, perhaps cut short
    if profile.data_source == "folder" and (not folder.exists() or (started and not is_complete(folder))):
        return download_kaggle()
    return None


def _import_kagglehub():
    try:
        import kagglehub
    except ImportError:
        raise DownloadError(
            "Downloading from Kaggle needs kagglehub: `pip install kagglehub` (Colab has it), then run this again; "
            f"or download the zip from {KAGGLE_URL} by hand and unpack it into {dataset_folder()}."
        ) from None
    return kagglehub


def _explain(err: Exception, dest: Path) -> str:
    """One message for a failed Kaggle download: what happened and what to do."""
    text = " ".join(str(err).split())[:300] or type(err).__name__
    status = getattr(getattr(err, "response", None), "status_code", None)
    by_hand = f"or download the zip from {KAGGLE_URL} by hand and unpack it into {dest}"
    if status in (401, 403):
        advice = ("Kaggle asks for credentials: create an API token (kaggle.com, Settings, API) and put it in "
                  "~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY (on Colab: notebook secrets), ")
    elif status == 404:
        advice = f"Kaggle does not know {KAGGLE_HANDLE} (renamed or removed?): "
    else:
        advice = ("Is there a network connection? (Kaggle is not reachable offline; on Colab it is.) "
                  "Run it again with network, ")
    return f"Could not download {KAGGLE_HANDLE} from Kaggle ({type(err).__name__}: {text}). {advice}{by_hand}."


def _layout_root(path: Path, depth: int = 3) -> Path | None:
    """The folder under ``path`` holding ``train/`` and ``test/`` (any case), searched a few levels deep."""
    subdirs = {p.name.lower(): p for p in path.iterdir() if p.is_dir()} if path.is_dir() else {}
    if {"train", "test"} <= set(subdirs):
        return path
    if depth:
        for sub in sorted(subdirs.values()):
            found = _layout_root(sub, depth - 1)
            if found is not None:
                return found
    return None


def _copy_tree(root: Path, dest: Path) -> None:
    """Copy every image of ``root/{train,test}/{benign,malignant}`` into ``dest``
    (folder names in lower case); files already there with the same size stay."""
    for split_dir in (p for p in root.iterdir() if p.is_dir() and p.name.lower() in _SPLITS):
        for class_dir in (p for p in split_dir.iterdir() if p.is_dir() and p.name.lower() in CLASS_NAMES):
            target = dest / split_dir.name.lower() / class_dir.name.lower()
            target.mkdir(parents=True, exist_ok=True)
            for file in class_dir.rglob("*"):
                if not (file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES):
                    continue
                out = target / file.relative_to(class_dir)
                if out.is_file() and out.stat().st_size == file.stat().st_size:
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".part")
                shutil.copyfile(file, tmp)
                os.replace(tmp, out)


def download_kaggle(dest=None, *, force: bool = False, expected: dict | None = None,
                    handle: str = KAGGLE_HANDLE) -> Download:
    """Fetch the Kaggle dataset with ``kagglehub.dataset_download`` and copy it
    to ``dest`` (default :func:`dataset_folder`) as ``train|test/benign|malignant``.

    Skipped when ``dest`` already holds a finished copy (:func:`is_complete`)
    unless ``force``. The counts are compared with ``expected`` (default
    :data:`KAGGLE_COUNTS`): see :attr:`Download.problems`. Raises
    :class:`DownloadError` without kagglehub, without network, or when Kaggle
    refuses; the message says what to do.
    """
    dest = Path(dest) if dest else dataset_folder()
    expected = dict(KAGGLE_COUNTS if expected is None else expected)
    if not force and is_complete(dest):
        return Download("kaggle", dest, count_images(dest), expected, skipped=True)
    kagglehub = _import_kagglehub()
    try:
        fetched = Path(kagglehub.dataset_download(handle, force_download=force) if force
                       else kagglehub.dataset_download(handle))
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001  (network, HTTP and credential errors come in many classes)
        raise DownloadError(_explain(err, dest)) from err
    root = _layout_root(fetched)
    if root is None:
        raise DownloadError(
            f"kagglehub put {handle} in {fetched}, but no folder there holds train/ and test/: the dataset's "
            f"layout has changed. Arrange its images as {dest}/train|test/benign|malignant by hand."
        )
    dest.mkdir(parents=True, exist_ok=True)
    storage.write_json(dest / MARKER, {"handle": handle, "from": str(fetched), "counts": None})  # started
    _copy_tree(root, dest)
    counts = count_images(dest)
    storage.write_json(dest / MARKER, {"handle": handle, "from": str(fetched), "counts": counts})
    return Download("kaggle", dest, counts, expected)


def download_isic(out_dir=None, search: str = ISIC_SEARCH, limit: int = 10000, *, force: bool = False) -> Download:
    """Download ISIC Archive images and ``metadata.csv`` with ``isic-cli``.

    Needs network (run it on Colab) and ``pip install isic-cli``. The folder
    (default ``<data dir>/isic``) is then ready for ``build_manifest("isic",
    out_dir)``. Skipped when ``metadata.csv`` is there, unless ``force``.
    """
    out_dir = Path(out_dir) if out_dir else paths.data_dir() / "isic"
    meta = out_dir / "metadata.csv"
    if meta.is_file() and not force:
        return Download("isic", out_dir, {"images": _isic_rows(meta)}, {}, skipped=True)
    exe = shutil.which("isic")
    if exe is None:
        raise DownloadError("The `isic` command is missing: `pip install isic-cli`, then run this again.")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([exe, "image", "download", "--search", search, "--limit", str(limit), str(out_dir)], check=True)
    except subprocess.CalledProcessError as err:
        raise DownloadError(
            f"`isic image download` failed (exit status {err.returncode}; its message is above). Is there a network "
            "connection? (The ISIC Archive is not reachable offline; on Colab it is.) Run it again with network."
        ) from None
    return Download("isic", out_dir, {"images": _isic_rows(meta) if meta.is_file() else 0}, {})


def _isic_rows(meta: Path) -> int:
    with open(meta, encoding="utf-8", errors="replace") as f:
        return max(sum(1 for line in f if line.strip()) - 1, 0)

