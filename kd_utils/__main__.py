"""Command line.

``python -m kd_utils reproduce [--profile paper|cpu|smoke]``
    Runs the notebooks in order with papermill; executed copies, tables
    (markdown + CSV) and figures (PNG) go to ``results/<profile>/``.
``python -m kd_utils quickstart [--profile ...]``
    Data, teacher and distilled DSNet without notebooks; prints the metrics.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def notebooks_dir() -> Path:
    from . import config

    return config.repo_root() / "notebooks"


def auto_profile() -> tuple[str, str]:
    """``(profile, reason)``: paper with a GPU and the real data, else cpu."""
    from . import config

    if os.environ.get("KD_PROFILE"):
        return os.environ["KD_PROFILE"], "set by KD_PROFILE"
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    real = [
        config.data_dir() / "melanoma_cancer_dataset",
        config.data_dir() / "isic" / "metadata.csv",
    ]
    found = [p for p in real if p.exists()]
    if gpu and found:
        return "paper", f"a GPU and the real dataset ({found[0]}) are present"
    missing = [] if gpu else ["no GPU"]
    if not found:
        missing.append(f"no real dataset in {real[0]} or {real[1].parent}")
    return "cpu", ", ".join(missing) + " (see data/README.md)"


def reproduce(profile_name: str | None, only: list[str] | None = None) -> int:
    import papermill

    from . import config

    if profile_name is None:
        profile_name, why = auto_profile()
        print(f"Profile {profile_name}: {why}.")
    profile = config.get_profile(profile_name)
    out_dir = config.results_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    books = sorted(notebooks_dir().glob("0*.ipynb"))
    if only:
        books = [b for b in books if any(b.name.startswith(o) for o in only)]
    start = time.perf_counter()
    for i, book in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {book.name} (profile {profile.name})", flush=True)
        t0 = time.perf_counter()
        papermill.execute_notebook(
            str(book),
            str(out_dir / book.name),
            parameters={"PROFILE": profile.name},
            cwd=str(book.parent),
            progress_bar=sys.stderr.isatty(),
        )
        print(f"      done in {time.perf_counter() - t0:.0f} s -> {out_dir / book.name}", flush=True)
    print(f"\nAll {len(books)} notebooks ran in {time.perf_counter() - start:.0f} s. Paper vs ours:\n")
    for table in sorted(config.results_dir(profile).glob("table*.md")):
        print(table.read_text())
    print(f"Tables, figures and executed notebooks: {config.results_dir(profile)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run the notebooks in order and collect tables and figures")
    rep.add_argument("--profile", choices=["paper", "cpu", "smoke"], default=None,
                     help="default: paper with a GPU and the real data, else cpu")
    rep.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 01 02")
    quick = sub.add_parser("quickstart", help="data, teacher and distilled DSNet; prints test metrics")
    quick.add_argument("--profile", default=None, help="paper, cpu or smoke (default: $KD_PROFILE or cpu)")
    quick.add_argument("--teacher-epochs", type=int, default=None)
    quick.add_argument("--student-epochs", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command == "reproduce":
        return reproduce(args.profile, args.only)
    from .pipeline import quickstart

    overrides = {}
    if args.teacher_epochs is not None:
        overrides["teacher_epochs"] = args.teacher_epochs
    if args.student_epochs is not None:
        overrides["student_epochs"] = args.student_epochs
    quickstart(args.profile, **overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
