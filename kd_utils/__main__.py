"""Command line.

``python -m kd_utils reproduce [--profile paper|cpu|smoke|colab] [--only 01 02 ...] [--seeds 10 11] [--mixed-precision] [--jit] [--students NAME ...]``
    Runs the notebooks in order with papermill; executed copies, tables
    (markdown + CSV) and figures (PNG) go to ``results/<profile>/``.
    ``--only`` takes notebook prefixes (``01`` ... ``07``); an unknown prefix
    or an empty list is refused. ``--seeds``, ``--mixed-precision``,
    ``--jit`` (XLA) and ``--students`` (the large students of Table 2;
    EfficientNetB0 among them) override the profile in every notebook.
    ``--shard i/n`` (or ``KD_SHARD=i/n``):
    sessions sharing one artifacts folder split the runs of every sweep;
    this one trains shard ``i`` of ``n`` and waits for the other shards'
    runs (``KD_SHARD_WAIT`` seconds, default 12 h) before each table.
``python -m kd_utils reproduce --profile paper --dry-run``
    The paper profile's code path offline, on stand-ins (profile
    ``paper-dry-run``): 224 px, every backbone's weights loaded from a local
    file, a few synthetic images in the paper dataset's folder layout, one
    epoch, one seed, two values per sweep; results in
    ``results/paper-dry-run/``. Proves the path runs; its numbers mean
    nothing. ``--profile colab-robust --dry-run``: the same with that
    profile's switches (``colab-robust-dry-run``). ``--dry-run`` with
    another profile is a usage error.
``python -m kd_utils estimate [--profile ...] [--flops] [--steps N] [--json] [same overrides as reproduce]``
    Every training run notebooks 02-07 make for the profile and how many
    hours they take: timed from ``--steps`` training steps per model on this
    machine (on a CPU DSNet alone, the others scaled by FLOPs), or with
    ``--flops`` from FLOPs and an assumed T4 throughput. An estimate.
``python -m kd_utils quickstart [--profile ...]``
    Data, teacher and distilled DSNet without notebooks; prints the metrics.
``python -m kd_utils export MODEL --format tflite --quantize none|dynamic|int8|all [--calibration DIR]``
    A .keras model (or ``dsnet``: the profile's final distilled DSNet) as
    TFLite; compares Keras and TFLite on the profile's test split when the
    profile has one. int8 calibrates on 100-500 images of ``DIR`` (read and
    checked as ``predict`` does), else on the profile's training split.
``python -m kd_utils predict IMAGE_OR_DIR... [--model PATH] [--json | --csv]``
    Malignant probability per image with a .keras or .tflite model of two
    classes. Images under 32 px on a side or more elongated than 4:1 are
    refused (training excludes them); EXIF orientation is applied.
    A research tool, not a diagnostic device.
``python -m kd_utils evaluate MODEL FOLDER [--split train|test] [--threshold 0.5] [--resamples 2000] [--seed 0] [--json]``
    External validation: a .keras or .tflite model on any folder labelled
    by sub-folder (``FOLDER/{benign,malignant}/`` or
    ``FOLDER/{train,test}/{benign,malignant}/``): accuracy, AUC,
    sensitivity, specificity with 95% bootstrap intervals over the images,
    the confusion matrix and the malignant-call rate. Images are read as
    ``predict`` reads them; unreadable ones are listed and left out.
``python -m kd_utils shortcuts MODEL FOLDER [--split train|test] [--limit N] [--seed 0] [--json]``
    The same images under a fixed battery of transforms that leave the
    lesion as it is (black frames, dark corners, zoom, exposure, contrast,
    colour cast): accuracy, share called malignant and share of calls that
    flip, per transform (:mod:`kd_utils.tools.shortcuts`).
``python -m kd_utils screen [--profile ...] [--set FIELD=VALUE ...] [--view NAME=VALUE ...] [--models dsnet teacher distilled uniform shuffled] [--seeds ...] [--converged] [--json]``
    A candidate change to a profile, measured where choices are made: DSNet
    without a teacher (each seed), with ``--models`` also the teacher, DSNet
    distilled from it and DSNet on the uniform and shuffled controls' soft
    targets, trained with the change (or loaded when done) and scored on the
    validation split only - accuracy and the share of calls that flip under
    the shortcut battery. ``--set`` changes a profile field (``color_constancy=true``),
    ``--view`` a number of the robust views (``vignette_probability=0.5``);
    with neither, the profile itself (the baseline). Never reads the test
    split or an external folder (:mod:`kd_utils.tools.screen`).
``python -m kd_utils download [--source kaggle|isic] [--out DIR] [--limit N] [--force]``
    The paper profile's images: the public Kaggle dataset (default; needs
    ``pip install kagglehub``, no account) copied to
    ``data/melanoma_cancer_dataset/{train,test}/{benign,malignant}`` and its
    image counts checked, or ISIC Archive images (``isic-cli``; ``--limit``,
    default 10000) in ``data/isic/``. Needs network; skipped when complete.
``python -m kd_utils benchmark [--out DIR] [--runs N] [--quick]``
    Size, FLOPs, latency and throughput of DSNet and larger models on this
    machine, and what precomputed teacher logits save in training.

Exit codes: 0 everything done; 1 some inputs failed (``predict``: the others
are still printed; ``download``: the images are in place but their counts
differ from the published dataset's); 2 usage error - a bad option, value, path or environment
variable (``KD_PROFILE``, ``KD_ARTIFACTS``, ``KD_DATA_DIR``, ``KD_SHARD``,
``KD_SHARD_WAIT``), a damaged or
unsuitable model, a folder ``evaluate`` cannot score, an earlier step's output missing, a run that another
process is writing, a saved manifest that was damaged, or a download that
cannot be done (no network, no kagglehub or isic-cli, Kaggle refused) - said in one line
on stderr, nothing done; 3 internal error (a traceback is printed: a bug, or a
notebook or training run that raised); 130 interrupted (Ctrl-C). Arguments
and environment are checked before TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import paths
from .tools import commands
from .tools.commands import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

PROG = "python -m kd_utils"


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (:class:`UsageError`) instead of usage text and exit."""

    def error(self, message):
        raise commands.UsageError(f"{message} (see {self.prog} --help)")


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    return parse


def _add_overrides(parser, what: str) -> None:
    """The profile overrides ``reproduce`` and ``estimate`` share."""
    from . import config

    parser.add_argument("--seeds", nargs="+", type=_count(0), metavar="SEED",
                        help="student seeds instead of the profile's, e.g. --seeds 10 (fewer runs)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help=f"float16 compute on a GPU ({what}; ignored on a CPU)")
    parser.add_argument("--jit", action="store_true", help=f"compile training steps with XLA on a GPU ({what})")
    parser.add_argument("--students", nargs="+", choices=config.PRETRAINED_STUDENTS, metavar="NAME",
                        help="the large students of Table 2 instead of the profile's, EfficientNetB0 among them: "
                             + ", ".join(config.PRETRAINED_STUDENTS))


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import config

    profiles = list(config.PROFILE_NAMES)
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="reproduce, estimate, quickstart, export, predict, evaluate, shortcuts, screen, "
                                     "benchmark or download")
    rep = sub.add_parser("reproduce", help="run the notebooks in order and collect tables and figures")
    rep.add_argument("--profile", choices=profiles, default=None,
                     help="default: $KD_PROFILE, else paper with a GPU, else kaggle-cpu where the Kaggle images are "
                          "on disk or can be downloaded, else cpu (generated images)")
    rep.add_argument("--only", nargs="*", metavar="PREFIX", help="notebook prefixes to run, e.g. 01 02")
    _add_overrides(rep, "recorded in every run")
    rep.add_argument("--dry-run", action="store_true",
                     help="with --profile paper (or colab-robust): its code path on local stand-ins (generated "
                          "images and weights files, one epoch, one seed, short sweeps) in results/paper-dry-run "
                          "(colab-robust-dry-run); no download, numbers meaningless")
    rep.add_argument("--shard", metavar="I/N", default=None,
                     help="train shard I of N of every sweep's runs (sessions sharing one artifacts folder); "
                          "default: $KD_SHARD")
    est = sub.add_parser("estimate", help="the runs of notebooks 02-07 and how many hours they take (an estimate)")
    est.add_argument("--profile", choices=profiles, default=None, help="default: $KD_PROFILE or cpu")
    est.add_argument("--flops", action="store_true",
                     help="by FLOPs and an assumed T4 throughput, no timing (no GPU needed)")
    est.add_argument("--steps", type=_count(1), default=3, help="timed training steps per model (default 3)")
    est.add_argument("--warmup", type=_count(1), default=1, help="untimed steps before them (default 1)")
    est.add_argument("--json", action="store_true", help="the estimate as one JSON document on stdout")
    est.add_argument("--step-times", metavar="FILE", default=None,
                     help="step times measured elsewhere by `python -m kd_utils.tools.steptime --out FILE` "
                          "(no timing here)")
    _add_overrides(est, "as the runs would")
    quick = sub.add_parser("quickstart", help="data, teacher and distilled DSNet; prints test metrics")
    quick.add_argument("--profile", choices=profiles, default=None, help="default: $KD_PROFILE or cpu")
    quick.add_argument("--teacher-epochs", type=_count(1), default=None)
    quick.add_argument("--student-epochs", type=_count(1), default=None)
    exp = sub.add_parser("export", help="export a .keras model to TFLite and compare on the test split")
    exp.add_argument("model", metavar="MODEL", help="a .keras file, or 'dsnet' for the profile's final distilled DSNet")
    exp.add_argument("--format", choices=["tflite"], default="tflite")
    exp.add_argument("--quantize", nargs="+", choices=["none", "dynamic", "int8", "all"], default=["none"],
                     help="none (float32), dynamic (int8 weights), int8 (full integer, uint8 input); several or all")
    exp.add_argument("--calibration", metavar="DIR", default=None,
                     help="int8: calibrate on 100-500 images of this folder (default: the profile's training split)")
    exp.add_argument("--profile", choices=profiles, default=None,
                     help="whose model, training split (int8) and test split (default: $KD_PROFILE or cpu)")
    exp.add_argument("--out", default=None, help="a .tflite file (one quantization) or a folder (default: the model's folder)")
    pred = sub.add_parser("predict", help="malignant probability per image (research use only)")
    pred.add_argument("paths", nargs="+", metavar="IMAGE_OR_DIR")
    pred.add_argument("--model", default=None, help=".keras or .tflite file (default: the profile's final DSNet)")
    pred.add_argument("--profile", choices=profiles, default=None,
                      help="profile of the default model (default: $KD_PROFILE or cpu)")
    form = pred.add_mutually_exclusive_group()
    form.add_argument("--json", dest="output", action="store_const", const="json", default="table",
                      help="one JSON document on stdout (path, malignant_probability, label, error per file)")
    form.add_argument("--csv", dest="output", action="store_const", const="csv",
                      help="CSV on stdout: path,malignant_probability,label,error")
    ev = sub.add_parser("evaluate", help="external validation: metrics with intervals on a labelled image folder")
    ev.add_argument("model", metavar="MODEL", help=".keras or .tflite file")
    ev.add_argument("folder", metavar="FOLDER",
                    help="benign/ and malignant/ sub-folders, directly or under train/ and/or test/")
    ev.add_argument("--split", choices=["train", "test"], default=None,
                    help="with train/ and test/: use only this one (default: every image found)")
    ev.add_argument("--threshold", type=_probability, default=0.5,
                    help="malignant when its probability is at least this (default 0.5, as predict)")
    ev.add_argument("--resamples", type=_count(1), default=2000, help="bootstrap resamples (default 2000)")
    ev.add_argument("--seed", type=_count(0), default=0, help="bootstrap seed (default 0)")
    ev.add_argument("--json", action="store_true", help="one JSON document on stdout (metrics, images used, skipped)")
    cut = sub.add_parser("shortcuts", help="calls that flip under lesion-preserving transforms (frame, corners, "
                                           "zoom, exposure, colour) of a labelled folder's images")
    cut.add_argument("model", metavar="MODEL", help=".keras or .tflite file")
    cut.add_argument("folder", metavar="FOLDER", help="as for evaluate")
    cut.add_argument("--split", choices=["train", "test"], default=None, help="as for evaluate")
    cut.add_argument("--limit", type=_count(2), default=None, help="at most this many images, drawn at random")
    cut.add_argument("--seed", type=_count(0), default=0, help="seed of that draw (default 0)")
    cut.add_argument("--json", action="store_true", help="one JSON document on stdout")
    scr = sub.add_parser("screen", help="a candidate change to a profile on the validation split and the shortcut "
                                         "battery (training what it needs)")
    scr.add_argument("--profile", choices=profiles, default=None, help="default: $KD_PROFILE or cpu")
    scr.add_argument("--set", dest="settings", nargs="+", metavar="FIELD=VALUE", default=None,
                     help="profile fields to change, e.g. color_constancy=true (see kd_utils.tools.screen.SETTINGS)")
    scr.add_argument("--view", dest="views", nargs="+", metavar="NAME=VALUE", default=None,
                     help="numbers of the robust views to change, e.g. vignette_probability=0.5 or zoom=0.6,1.5 "
                          "(kd_utils.batches.ROBUST)")
    scr.add_argument("--models", nargs="+", choices=["dsnet", "teacher", "distilled", "uniform", "shuffled"],
                     default=["dsnet"],
                     help="dsnet: DSNet without a teacher, each seed (default); teacher: the teacher (one run); "
                          "distilled: DSNet distilled from it at the profile's T and alpha, each seed; uniform, "
                          "shuffled: the same on a control's soft targets (notebook 07's), each seed")
    scr.add_argument("--seeds", nargs="+", type=_count(0), metavar="SEED", default=None,
                     help="DSNet seeds (default: the profile's; the first two with --converged)")
    scr.add_argument("--converged", action="store_true",
                     help="DSNet on the profile's convergence schedule (notebook 03's check) instead of its epochs")
    scr.add_argument("--json", action="store_true", help="one JSON document on stdout")
    bench = sub.add_parser("benchmark", help="size, FLOPs, latency, throughput and training-side timings on this machine")
    bench.add_argument("--out", default=None, help="folder for benchmark.md/.csv/.png (default: results/benchmark)")
    bench.add_argument("--runs", type=_count(1), default=None, help="timed batch-1 calls per model (default 50)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes and counts: checks that it runs, numbers meaningless")
    down = sub.add_parser("download", help="fetch the paper profile's images (Kaggle dataset or ISIC Archive)")
    down.add_argument("--source", choices=["kaggle", "isic"], default="kaggle",
                      help="kaggle: the Melanoma Skin Cancer Dataset of 10000 Images (default); isic: isic-cli")
    down.add_argument("--out", default=None,
                      help="folder (default: data/melanoma_cancer_dataset, or data/isic; under $KD_DATA_DIR)")
    down.add_argument("--limit", type=_count(1), default=None, help="isic only: at most this many images (default 10000)")
    down.add_argument("--force", action="store_true", help="fetch again even when the folder is complete")
    return parser


def _run(args) -> int:
    uses_profile = args.command in ("reproduce", "quickstart", "export", "estimate", "screen") or (
        args.command == "predict" and not args.model)
    if args.command == "reproduce" and args.dry_run:
        args.profile = commands.dry_run_profile_name(args.profile)
    if uses_profile and args.profile is None:
        commands.check_profile_env()
    if uses_profile:
        commands.check_artifacts_env()
    if args.command in ("reproduce", "quickstart"):
        commands.check_folder_env("KD_DATA_DIR", paths.data_dir())
    if args.command == "reproduce":
        import importlib.util

        commands.select_notebooks(args.only)
        shard = commands.check_shard(args.shard)
        if importlib.util.find_spec("papermill") is None:
            raise commands.UsageError("reproduce needs papermill: pip install -e '.[notebooks]' (or pip install papermill)")
        commands.check_students(args.students)
        return commands.reproduce(args.profile, args.only, args.seeds, args.mixed_precision, args.jit, args.students,
                         shard)
    if args.command == "estimate":
        commands.check_students(args.students)
        return commands.estimate(args.profile, args.flops, args.steps, args.warmup, args.json, args.seeds,
                        args.mixed_precision, args.jit, args.students, args.step_times)
    if args.command == "export":
        return commands.export(args.model, args.quantize, args.profile, args.out, args.calibration)
    if args.command == "predict":
        return commands.predict(args.paths, args.model, args.profile, args.output)
    if args.command == "screen":
        commands.check_folder_env("KD_DATA_DIR", paths.data_dir())
        settings, views = commands.check_screen(args.settings, args.views)
        return commands.screen(args.profile, settings, views, args.models, args.seeds, args.converged, args.json)
    if args.command == "shortcuts":
        return commands.shortcuts(args.model, args.folder, args.split, args.limit, args.seed, args.json)
    if args.command == "evaluate":
        return commands.evaluate(args.model, args.folder, args.split, args.threshold, args.resamples, args.seed, args.json)
    if args.command == "download":
        commands.check_folder_env("KD_DATA_DIR", paths.data_dir())
        if args.out:
            commands.check_folder(Path(args.out), f"--out {args.out}")
        if args.limit is not None and args.source != "isic":
            raise commands.UsageError("--limit applies to --source isic only (the Kaggle dataset comes whole)")
        return commands.download_data(args.source, args.out, args.limit, args.force)
    if args.command == "benchmark":
        if args.out:
            commands.check_folder(Path(args.out), f"--out {args.out}")
        from .tools.benchmark import run

        run(args.out, runs=args.runs, quick=args.quick)
        return EXIT_OK
    overrides = {}
    if args.teacher_epochs is not None:
        overrides["teacher_epochs"] = args.teacher_epochs
    if args.student_epochs is not None:
        overrides["student_epochs"] = args.student_epochs
    commands.quickstart(args.profile, **overrides)
    return EXIT_OK


def main(argv=None) -> int:
    """Run one command; returns the exit code. A user mistake is one ``error:`` line on stderr and 2."""
    try:
        return _run(build_parser().parse_args(argv))
    except commands.UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        # Run state the user has to sort out (another process writes the run,
        # a damaged saved manifest): one line, not a traceback.
        from .data import DataError
        from .storage import RunLockedError

        if isinstance(err, (RunLockedError, DataError)):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USAGE
        raise


def entry(argv=None) -> int:
    """:func:`main` for ``python -m kd_utils``: Ctrl-C is 130 and an unexpected error 3, with its traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001  (a bug or a failed run: show where, keep 1 and 2 for the documented cases)
        import traceback

        traceback.print_exc()
        print("internal error: the traceback above says where (a bug, or a notebook or training run that raised)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(entry())
