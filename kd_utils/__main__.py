"""Command line: ``python -m kd_utils quickstart [--profile cpu]``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd_utils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser(
        "quickstart",
        help="generate data, train the teacher, distil DSNet and print test metrics",
    )
    quick.add_argument("--profile", default=None, help="paper, cpu or smoke (default: $KD_PROFILE or cpu)")
    quick.add_argument("--teacher-epochs", type=int, default=None)
    quick.add_argument("--student-epochs", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command == "quickstart":
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
