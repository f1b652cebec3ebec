"""Near-copies in a dataset that brings its own train/test folders.

The Kaggle release the paper used holds the same lesion more than once:
re-encoded, resized or slightly cropped copies, some of them in its
``train/`` folder and again in its ``test/`` folder. A model scored on such a
test image has seen it. :func:`folder_report` measures this on a manifest:
the groups of near-copies (perceptual hashes within a few bits, or the same
file), how many of them straddle the dataset's own folders, how many of its
test images have a copy in its training folder, and whether the manifest's
own splits keep every group on one side (the pooled split does; a copy
that crossed would be a leak).

The groups are those :func:`kd_utils.data.build_manifest` uses to split:
connected components of "same sha1, or pHash within ``bits``" (a chain of
near-copies is one group). Exact copies were already kept once while the
manifest was built (``manifest.info["duplicates"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .data import Manifest, _groups
from .images import hamming_matrix

#: The dataset's own folders, as the ``folder`` source lays them out.
OWN_FOLDERS = ("train", "test")


def own_folder(path, root) -> str | None:
    """``"train"`` or ``"test"``: the dataset folder ``path`` lies in under
    ``root`` (None when it lies in neither, e.g. a flat folder)."""
    try:
        parts = Path(path).resolve().relative_to(Path(root).resolve()).parts
    except ValueError:
        parts = Path(path).parts
    return next((p.lower() for p in parts if p.lower() in OWN_FOLDERS), None)


def groups(manifest: Manifest, bits: int | None = None) -> pd.DataFrame:
    """The manifest's images (path, label, split, own folder) with the id of
    their near-copy group (``group``) and its size (``group_size``)."""
    bits = manifest.info.get("near_duplicate_bits", 4) if bits is None else bits
    frame = manifest.frame
    root = manifest.info.get("root", "")
    where = [own_folder(o or p, root) for p, o in zip(frame.path, frame.original_path)]
    out = pd.DataFrame({"path": frame.path, "label": frame.label, "split": frame.split, "own_folder": where,
                        "group": _groups(list(frame.phash), list(frame.sha1), bits)})
    out["group_size"] = out.groupby("group").path.transform("size")
    return out


def folder_report(manifest: Manifest, bits: int | None = None, examples: int = 6) -> dict:
    """Near-copy groups inside and across the dataset's own folders.

    Returns ``{"counts": dict, "examples": DataFrame}``. ``counts``:

    * ``images``, ``groups`` (of two or more images) and ``images_in_groups``;
    * ``groups_across_folders``: groups holding images of both the dataset's
      ``train/`` and ``test/`` folders;
    * ``test_images_with_train_copy``: test-folder images in such a group
      (what scoring on the dataset's own test folder would leak);
    * ``groups_across_splits``: groups split between the manifest's own
      train / val / test (0 when the split keeps groups whole);
    * ``bits``: the pHash distance that counts as a near-copy.

    ``examples``: up to ``examples`` pairs (a test-folder image and its
    closest training-folder copy, with their distance), for showing side by
    side. Counts are 0 for a source without train/test folders.
    """
    bits = manifest.info.get("near_duplicate_bits", 4) if bits is None else bits
    table = groups(manifest, bits)
    shared = table[table.group_size > 1]
    per_group = shared.groupby("group")
    across = per_group.own_folder.agg(lambda s: {"train", "test"} <= set(s))
    across_ids = across.index[across.to_numpy(dtype=bool)]  # (an empty result has dtype object)
    test_leaks = shared[shared.group.isin(across_ids) & (shared.own_folder == "test")]
    counts = {
        "images": int(len(table)),
        "groups": int(per_group.ngroups),
        "images_in_groups": int(len(shared)),
        "groups_across_folders": int(len(across_ids)),
        "test_images_with_train_copy": int(len(test_leaks)),
        "groups_across_splits": int((per_group.split.nunique() > 1).sum()),
        "bits": int(bits),
    }
    rows = []
    for leak in test_leaks.head(examples).itertuples():
        mates = shared[(shared.group == leak.group) & (shared.own_folder == "train")]
        dist = hamming_matrix([manifest.frame.phash[leak.Index]], manifest.frame.phash[mates.index])[0]
        mate = mates.iloc[int(np.argmin(dist))]
        rows.append({"test_image": leak.path, "train_image": mate.path, "label": int(leak.label),
                     "label_of_copy": int(mate.label), "bits": int(dist.min()), "split_now": leak.split})
    return {"counts": counts, "examples": pd.DataFrame(
        rows, columns=["test_image", "train_image", "label", "label_of_copy", "bits", "split_now"])}
