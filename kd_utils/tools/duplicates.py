"""Near-copies in a manifest: across its splits, and across a dataset's own train/test folders.

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

:func:`leakage_audit` counts the pairs of copies still in the manifest by
split pair (``train-test`` and the like: a pair across splits is a leak) and
what building the manifest removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data import SPLITS, Manifest, duplicate_groups
from ..images import hamming_matrix

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
                        "group": duplicate_groups(list(frame.phash), list(frame.sha1), bits)})
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


def duplicate_pairs(manifest: Manifest, max_bits: int | None = None) -> pd.DataFrame:
    """Every pair of images in the manifest that are the same file (sha1) or
    near duplicates (perceptual hashes within ``max_bits``), with their splits."""
    max_bits = manifest.info.get("near_duplicate_bits", 4) if max_bits is None else max_bits
    frame = manifest.frame
    dist = hamming_matrix(frame.phash, frame.phash)
    sha1 = np.asarray(frame.sha1, dtype=object)
    same = sha1[:, None] == sha1[None, :]
    rows, cols = np.nonzero(np.triu((dist <= max_bits) | same, k=1))
    return pd.DataFrame({
        "a": frame.path.values[rows], "b": frame.path.values[cols],
        "split_a": frame.split.values[rows], "split_b": frame.split.values[cols],
        "kind": np.where(same[rows, cols], "exact", "near"), "bits": dist[rows, cols],
    })


def near_duplicate_pairs(manifest: Manifest, max_bits: int | None = None) -> pd.DataFrame:
    """Pairs of images in different splits whose perceptual hashes are within ``max_bits``."""
    pairs = duplicate_pairs(manifest, max_bits)
    return pairs[pairs.split_a != pairs.split_b].drop(columns="kind").reset_index(drop=True)


def leakage_audit(manifest: Manifest, examples: int = 5) -> dict:
    """Exact and near duplicates within and across the splits.

    Returns ``{"pairs": DataFrame, "removed": dict, "examples": DataFrame}``:

    * ``pairs`` - duplicate pairs still in the manifest, counted by kind
      (exact / near) and by split pair (``train-train`` ... ``val-test``).
      Pairs inside one split are harmless; pairs across splits are leaks.
    * ``removed`` - what building the manifest removed: exact copies kept
      once, copies with conflicting labels, and test images of a source's own
      split that duplicated a training image (``removed_from_test``).
    * ``examples`` - up to ``examples`` pairs of each kind, remaining pairs
      first, then removed files with the image they duplicated.
    """
    pairs = duplicate_pairs(manifest)
    order = {s: i for i, s in enumerate(SPLITS)}
    if len(pairs):
        first = np.where(pairs.split_a.map(order) <= pairs.split_b.map(order), pairs.split_a, pairs.split_b)
        second = np.where(pairs.split_a.map(order) <= pairs.split_b.map(order), pairs.split_b, pairs.split_a)
        pairs["splits"] = [f"{a}-{b}" for a, b in zip(first, second)]
    else:
        pairs["splits"] = pd.Series(dtype=str)
    columns = [f"{a}-{b}" for i, a in enumerate(SPLITS) for b in SPLITS[i:]]
    counts = pd.crosstab(pairs.kind, pairs.splits).reindex(index=["exact", "near"], columns=columns)
    counts = counts.fillna(0).astype(int)
    counts["across splits"] = counts[[c for c in columns if c.split("-")[0] != c.split("-")[1]]].sum(axis=1)
    report = manifest.report
    removed_rows = report[report.reason.str.contains("duplicat", na=False)] if len(report) else report
    shown = pairs.sort_values("splits", key=lambda s: s.str.split("-").map(lambda p: p[0] == p[1]))
    example_rows = [
        {"what": f"{r.kind} pair, {r.splits}", "image": r.a, "detail": f"{r.b} ({r.bits} bits apart)"}
        for r in shown.groupby("kind").head(examples).itertuples()
    ] + [
        {"what": r.status, "image": r.path, "detail": r.reason}
        for r in removed_rows.head(2 * examples).itertuples()
    ]
    removed = dict(manifest.info.get("duplicates", {}))
    return {"pairs": counts, "removed": removed,
            "examples": pd.DataFrame(example_rows, columns=["what", "image", "detail"])}
