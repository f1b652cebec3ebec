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
    nothing. ``--dry-run`` with another profile is a usage error.
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
    flip, per transform (:mod:`kd_utils.shortcuts`).
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
import os
import shutil
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PROG = "python -m kd_utils"


class UsageError(Exception):
    """A mistake in the command line or its environment; the message is the one line shown."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (:class:`UsageError`) instead of usage text and exit."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


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


# --------------------------------------------------------------------------- checks (no TensorFlow)


def notebooks_dir() -> Path:
    from . import config

    return config.repo_root() / "notebooks"


def _notebooks() -> list[Path]:
    books = sorted(notebooks_dir().glob("0*.ipynb"))
    if not books:
        raise UsageError(
            f"no notebooks in {notebooks_dir()}: run from the project checkout or set KD_ROOT to it"
        )
    return books


def select_notebooks(only: list[str] | None) -> list[Path]:
    """The notebooks to run: all, or those starting with one of ``only``; UsageError otherwise."""
    books = _notebooks()
    if only is None:
        return books
    prefixes = ", ".join(b.name[:2] for b in books)
    if not only:
        raise UsageError(f"--only needs at least one notebook prefix (one of {prefixes}), e.g. --only 01 02")
    for prefix in only:
        if not any(b.name.startswith(prefix) for b in books):
            raise UsageError(
                f"--only {prefix!r} matches no notebook in {notebooks_dir()}; expected a prefix of one of "
                f"{', '.join(b.stem for b in books)} (e.g. {prefixes})"
            )
    return [b for b in books if any(b.name.startswith(o) for o in only)]


def check_profile_env() -> None:
    """``KD_PROFILE``, when set, must name a profile (checked where a profile is resolved)."""
    from . import config

    value = os.environ.get("KD_PROFILE")
    if value and value not in config.profile_names():
        raise UsageError(
            f"KD_PROFILE={value!r} is not a profile; expected one of {', '.join(config.profile_names())} "
            "(or unset it, or pass --profile)"
        )


def dry_run_profile_name(profile: str | None) -> str:
    """``--dry-run`` runs the paper profile on stand-ins; another ``--profile`` is refused."""
    from . import config

    if profile not in (None, "paper"):
        raise UsageError(f"--dry-run runs the paper profile's code path on stand-ins; it does not apply to "
                         f"--profile {profile} (leave --profile out or give --profile paper)")
    return config.DRY_RUN


def _check_folder(path: Path, what: str) -> None:
    """``path`` must be a folder or creatable as one: no file at it or above it."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"is inside {probe}, which is a file"
        raise UsageError(f"{what} {where}, not a folder; it must name a folder (created if missing)")


def check_folder_env(name: str, path: Path) -> None:
    """The folder an environment variable (or its default) names must be usable as a folder."""
    value = os.environ.get(name)
    _check_folder(path, f"{name}={value}" if value else f"{path} (default for {name})")


def check_shard(value: str | None) -> str | None:
    """``--shard`` (else ``KD_SHARD``) as ``"i/n"``, and ``KD_SHARD_WAIT``: UsageError when malformed."""
    from . import shard

    try:
        shard.wait_seconds()
        if value is not None:
            return str(shard.parse(value))
        found = shard.from_env()
    except ValueError as err:
        raise UsageError(f"--shard {value}: {err}" if value is not None else str(err)) from None
    return None if found is None else str(found)


def check_artifacts_env() -> None:
    from . import config

    check_folder_env("KD_ARTIFACTS", config.artifacts_dir())


def _check_model_arg(value: str, option: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(value)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"Unsupported model file {value} ({option}): expected a {' or '.join(suffixes)} file, "
                         f"got suffix {path.suffix or '(none)'!r}")
    if not path.exists():
        raise UsageError(f"{option} {value}: no such file")
    if not path.is_file():
        raise UsageError(f"{option} {value}: is a folder, expected a {' or '.join(suffixes)} file")
    return path


def _check_calibration(folder: str, wanted: list[str]) -> Path:
    from . import deploy

    if "int8" not in wanted:
        raise UsageError(f"--calibration {folder}: only int8 is calibrated; add --quantize int8 or drop --calibration")
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"--calibration {folder}: {'not a folder' if path.exists() else 'no such folder'}; "
                         "expected a folder of .jpg/.jpeg/.png images")
    low, high = deploy.CALIBRATION_RANGE
    found = sum(1 for p in deploy.expand_paths(path) if p.is_file())
    if found < low:
        raise UsageError(f"--calibration {folder}: {found} .jpg/.jpeg/.png file(s); int8 calibration needs "
                         f"{low} to {high} images like the ones the model will see")
    return path


# --------------------------------------------------------------------------- commands


def check_students(students: list[str] | None) -> None:
    """``--students`` must keep EfficientNetB0 (Table 5 compares it with DSNet)."""
    if students is not None and "EfficientNetB0" not in students:
        raise UsageError(f"--students {' '.join(students)}: EfficientNetB0 must be among them (Table 5 compares it "
                         "with DSNet), e.g. --students MobileNet EfficientNetB0")


#: Errors a notebook raises for the user to sort out (data, download, another
#: process on the run, ImageNet weights unavailable): ``reproduce`` reports
#: them in one line and exits with 2, as the command line does itself.
USER_ERRORS = ("DataError", "ImagesChanged", "DownloadError", "RunLockedError", "WeightsUnavailableError", "MissingStepError")


def _execute(papermill, book: Path, out: str, **options) -> None:
    """Run one notebook; a user's error raised inside it becomes one line (exit 2)."""
    try:
        papermill.execute_notebook(str(book), out, **options)
    except papermill.PapermillExecutionError as err:
        if err.ename in USER_ERRORS:
            message = " ".join(str(err.evalue).split())
            raise UsageError(f"{book.name} stopped: {message} (the executed notebook: {out})") from None
        raise


def reproduce(profile_name: str | None, only: list[str] | None = None, seeds: list[int] | None = None,
              mixed_precision: bool = False, jit: bool = False, students: list[str] | None = None,
              shard: str | None = None) -> int:
    from . import config

    books = select_notebooks(only)
    import papermill

    if shard:
        os.environ["KD_SHARD"] = shard  # read by kd_utils in the notebooks' kernels
        print(f"Shard {shard}: this session trains its share of every sweep's runs and waits for the other "
              "shards' (artifacts folder shared); the tables are made once every run is there.")

    if profile_name is None:
        profile_name, why = config.auto_profile()
        print(f"Profile {profile_name}: {why}.")
    profile = config.notebook_profile(profile_name, tuple(seeds or ()), mixed_precision, jit, tuple(students or ()))
    if profile.stand_ins:
        print(f"Dry run of the paper profile on stand-ins ({profile.image_size} px, weights files in {profile.weights}, "
              f"images in {profile.data_root}): it checks the code path, its numbers mean nothing.", flush=True)
    from .download import ensure_data

    fetched = ensure_data(profile)  # a failed download stops here, in one line, before any notebook
    if fetched is not None:
        print(fetched.summary(), flush=True)
    out_dir = config.results_dir(profile) / "notebooks"
    if shard:  # shards share the results folder too: each keeps its own executed copies
        out_dir = out_dir / f"shard-{shard.replace('/', '-of-')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, book in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {book.name} (profile {profile.name})", flush=True)
        t0 = time.perf_counter()
        _execute(papermill, book, str(out_dir / book.name),
                 parameters={"PROFILE": profile.name, "SEEDS": ",".join(map(str, seeds or ())),
                             "MIXED_PRECISION": bool(mixed_precision), "JIT": bool(jit),
                             "STUDENTS": ",".join(students or ())},
                 cwd=str(book.parent), progress_bar=sys.stderr.isatty())
        print(f"      done in {time.perf_counter() - t0:.0f} s -> {out_dir / book.name}", flush=True)
    print(f"\nAll {len(books)} notebooks ran in {time.perf_counter() - start:.0f} s. Paper vs ours:\n")
    for table in sorted(config.results_dir(profile).glob("table*.md")):
        print(table.read_text())
    beyond = sorted(p.name for p in config.results_dir(profile).glob("*.md") if not p.name.startswith("table"))
    if beyond:
        print("Beyond the paper (KD gain, ablation, calibration, leakage; notebook 07): " + ", ".join(beyond))
    print(f"Tables, figures and executed notebooks: {config.results_dir(profile)}")
    return EXIT_OK


def estimate(profile_name: str | None, flops: bool, steps: int, warmup: int, as_json: bool, seeds=None,
             mixed_precision: bool = False, jit: bool = False, students=None, step_times: str | None = None) -> int:
    """Print the runs of notebooks 02-07 and their hours (see :mod:`kd_utils.estimate`)."""
    from . import config

    overrides = {"seeds": tuple(seeds)} if seeds else {}
    overrides.update({"mixed_precision": True} if mixed_precision else {})
    overrides.update({"jit_compile": True} if jit else {})
    overrides.update({"students": tuple(students)} if students else {})
    profile = config.get_profile(profile_name, **overrides)
    from . import estimate as est  # TensorFlow from here on

    log = None if as_json else (lambda line: print(line, file=sys.stderr, flush=True))
    if step_times:
        import json

        try:
            measured = json.loads(Path(step_times).read_text())
            if not isinstance(measured, dict) or not isinstance(measured.get("models", {}), dict):
                raise ValueError("not a step-time file: expected the JSON object that "
                                 "`python -m kd_utils.steptime --out FILE` writes (image_size, batch_size, models)")
            result = est.from_step_times(profile, measured)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise UsageError(f"--step-times {step_times}: {err}") from None
    elif flops:
        result = est.flop_estimate(profile)
    else:
        result = est.estimate(profile, steps=steps, warmup=warmup, log=log)
    if as_json:
        import json

        print(json.dumps(result, indent=2))
    else:
        print(est.report(result, est.plan_table(profile)))
    return EXIT_OK


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


def _tflite_name(quantize: str) -> str:
    return {"none": "float32", "dynamic": "dynamic_int8", "int8": "int8"}[quantize]


def export(model_arg: str, quantizations: list[str], profile_name: str | None, out: str | None,
           calibration: str | None = None) -> int:
    """Export a .keras model to TFLite and compare it with Keras on the test split."""
    from . import deploy

    wanted = list(deploy.QUANTIZATIONS) if "all" in quantizations else list(dict.fromkeys(quantizations))
    if model_arg.lower() != "dsnet":
        if Path(model_arg).suffix.lower() == ".tflite":
            raise UsageError(f"MODEL {model_arg}: MODEL must be a .keras file or 'dsnet'; a .tflite file is exported already")
        _check_model_arg(model_arg, "MODEL", (".keras",))
    if out and Path(out).suffix.lower() == ".tflite" and len(wanted) > 1:
        raise UsageError(f"--out {out} names one file but {len(wanted)} quantizations were asked for; "
                         "give a folder instead")
    if out and Path(out).suffix.lower() != ".tflite":
        _check_folder(Path(out), f"--out {out}")
    calibration_dir = _check_calibration(calibration, wanted) if calibration else None

    from . import choices, config, pipeline  # TensorFlow from here on

    profile = config.get_profile(profile_name)
    try:
        keras_path = choices.final_student_path(profile) if model_arg.lower() == "dsnet" else Path(model_arg)
        reference = deploy.load_model(keras_path)
    except (pipeline.MissingStepError, FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    if out and Path(out).suffix.lower() == ".tflite":
        targets = {wanted[0]: Path(out)}
    else:
        folder = Path(out) if out else keras_path.parent
        targets = {q: folder / f"{keras_path.stem}_{_tflite_name(q)}.tflite" for q in wanted}
    try:
        manifest = pipeline.load_manifest(profile)
    except pipeline.MissingStepError as err:
        if "int8" in wanted and calibration_dir is None:
            raise UsageError(f"int8 needs representative images: give --calibration DIR (100-500 images), "
                             f"or build the {profile.name} profile's training split: {err}") from err
        print(f"note: no evaluation on the test split: {err}", file=sys.stderr)
        manifest = None
    representative = None
    if "int8" in wanted and calibration_dir is not None:
        try:
            representative, skipped = deploy.calibration_images(calibration_dir, reference.image_size, seed=profile.seed)
        except deploy.CalibrationError as err:
            raise UsageError(str(err)) from err
        note = f"; {len(skipped)} file(s) refused, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        print(f"int8 calibration: {len(representative)} images of {calibration_dir}{note}")
    elif "int8" in wanted:
        representative = deploy.representative_images(manifest, reference.image_size, n=200, seed=profile.seed)
        print(f"int8 calibration: {len(representative)} images of the {profile.name} training split")
    from .model_card import write_for_export  # MODEL_CARD.md next to the exported files
    from .storage import read_json
    from .training import RECORD_FILE, damaged

    record = read_json(keras_path.parent / RECORD_FILE)
    bad = damaged(keras_path.parent, record) if isinstance(record, dict) else []
    if bad:
        raise UsageError(f"{keras_path.parent / bad[0]} does not match the checksum in its {RECORD_FILE} (damaged): "
                         "loading the run again (the notebook that trained it) rebuilds it; nothing was exported")
    # Everything is written to a hidden folder beside the targets and moved into place at the
    # end: an error (or Ctrl-C) on the way leaves none of this export's files behind.
    out_dir = next(iter(targets.values())).parent
    staging = out_dir / f".export.tmp-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        staged = {q: staging / t.name for q, t in targets.items()}
        for quantize, target in staged.items():
            t0 = time.perf_counter()
            deploy.export_tflite(reference.model, target, quantize, representative)
            print(f"wrote {targets[quantize]} ({quantize}, {target.stat().st_size / 1e6:.2f} MB) "
                  f"in {time.perf_counter() - t0:.1f} s")
        print(f"Keras model {keras_path}: {keras_path.stat().st_size / 1e6:.2f} MB")
        if manifest is None:
            card = write_for_export(reference.model, keras_path, staged.values(), profile)
        else:
            table = deploy.compare_on_split(reference, list(staged.values()), manifest, "test")
            table["size_mb"] = table.size_bytes / 1e6
            columns = ["model", "format", "size_mb", "accuracy", "auc_malignant", "accuracy_loss", "agreement",
                       "max_prob_diff"]
            print(f"\nTest split of profile {profile.name} ({table.n.iloc[0]} images); "
                  "accuracy_loss = Keras accuracy minus this model's:")
            print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            card = write_for_export(reference.model, keras_path, staged.values(), profile, manifest, table)
        for quantize, target in staged.items():
            os.replace(target, targets[quantize])
        os.replace(card, out_dir / card.name)
        print(f"wrote {out_dir / card.name}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return EXIT_OK


def predict(paths: list[str], model: str | None, profile_name: str | None, output: str = "table") -> int:
    """Print the malignant probability of every image; errors go to stderr.

    ``output``: ``table`` (for people), ``json`` or ``csv`` (for scripts: only
    the data on stdout, the disclaimer and the summary on stderr). Returns 0
    when every input was predicted, 1 when some failed.
    """
    from . import deploy

    if model:
        model_path = _check_model_arg(model, "--model", deploy.MODEL_SUFFIXES)
    notes = sys.stdout if output == "table" else sys.stderr
    print(deploy.DISCLAIMER, file=notes)

    from . import choices, config, pipeline  # TensorFlow from here on

    try:
        if not model:
            model_path = choices.final_student_path(config.get_profile(profile_name))
        runner = deploy.load_model(model_path)
    except (pipeline.MissingStepError, FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    results = deploy.predict_paths(paths, runner)
    good = [r for r in results if r.ok]
    if output == "json":
        import json

        print(json.dumps({
            "disclaimer": deploy.DISCLAIMER, "model": str(model_path), "image_size": runner.image_size,
            "predicted": len(good), "failed": len(results) - len(good),
            "results": [{"path": r.path, "malignant_probability": r.malignant_probability, "label": r.label,
                         "error": r.error} for r in results],
        }, indent=2))
    elif output == "csv":
        deploy.results_frame(results).to_csv(sys.stdout, index=False, float_format="%.6f")
    elif good:
        width = max(len("file"), *(len(r.path) for r in good))
        print(f"{'file':<{width}}  malignant_probability  prediction")
        for r in good:
            print(f"{r.path:<{width}}  {r.malignant_probability:>21.4f}  {r.label}")
    for r in results:
        if not r.ok:
            print(f"error: {r.path}: {r.error}", file=sys.stderr)
    failed = len(results) - len(good)
    print(f"{len(good)} of {len(results)} file(s) predicted with {model_path} ({runner.image_size}px)"
          + (f"; {failed} failed (see the error lines)." if failed else "."), file=notes)
    return EXIT_OK if results and not failed else EXIT_SOME_FAILED


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {value}")
    return value


def _folder_runner(model: str, folder: str, split: str | None):
    """The runner of a ``.keras`` / ``.tflite`` file for scoring a labelled
    folder; the path and the folder are checked before TensorFlow is imported
    (a mistake in either: one line, exit 2)."""
    from . import deploy, external

    model_path = _check_model_arg(model, "MODEL", deploy.MODEL_SUFFIXES)
    external.labelled_images(folder, split)  # a DataError (exit 2) before the model is loaded
    try:
        return deploy.load_model(model_path)  # TensorFlow from here on
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err


def evaluate(model: str, folder: str, split: str | None = None, threshold: float = 0.5, resamples: int = 2000,
             seed: int = 0, as_json: bool = False) -> int:
    """``evaluate``: a model's metrics on a labelled folder (:mod:`kd_utils.external`).

    The model path and the folder are checked before TensorFlow is imported;
    unreadable images are listed on stderr and left out.
    """
    from . import deploy, external

    runner = _folder_runner(model, folder, split)
    result = external.evaluate_folder(runner, folder, split=split, threshold=threshold, n_resamples=resamples,
                                      seed=seed)
    for path, why in result.skipped:
        print(f"skipped: {path}: {why}", file=sys.stderr)
    if as_json:
        import json

        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(deploy.DISCLAIMER)
        print(result.summary())
    return EXIT_OK


def shortcuts(model: str, folder: str, split: str | None = None, limit: int | None = None, seed: int = 0,
              as_json: bool = False) -> int:
    """``shortcuts``: the lesion-preserving battery on a labelled folder (:mod:`kd_utils.shortcuts`)."""
    from . import shortcuts as battery

    runner = _folder_runner(model, folder, split)
    table, info = battery.report_folder(runner, folder, split=split, limit=limit, seed=seed)
    for path, why in info["skipped"]:
        print(f"skipped: {path}: {why}", file=sys.stderr)
    if as_json:
        import json

        print(json.dumps({**info, "transforms": table.reset_index().to_dict(orient="records")}, indent=2))
    else:
        print(f"{info['model']} ({info['image_size']} px) on {info['images']} images of {folder}: calls that flip "
              "under transforms that leave the lesion as it is")
        print(table.drop(columns="what").to_string(float_format=lambda v: f"{v:.3f}"))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from . import config

    profiles = list(config.PROFILE_NAMES)
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="reproduce, estimate, quickstart, export, predict, evaluate, shortcuts, benchmark "
                                     "or download")
    rep = sub.add_parser("reproduce", help="run the notebooks in order and collect tables and figures")
    rep.add_argument("--profile", choices=profiles, default=None,
                     help="default: $KD_PROFILE, else paper with a GPU, else kaggle-cpu where the Kaggle images are "
                          "on disk or can be downloaded, else cpu (generated images)")
    rep.add_argument("--only", nargs="*", metavar="PREFIX", help="notebook prefixes to run, e.g. 01 02")
    _add_overrides(rep, "recorded in every run")
    rep.add_argument("--dry-run", action="store_true",
                     help="with --profile paper: its code path on local stand-ins (generated images and weights "
                          "files, one epoch, one seed, short sweeps) in results/paper-dry-run; no download, "
                          "numbers meaningless")
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
                     help="step times measured elsewhere by `python -m kd_utils.steptime --out FILE` "
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


def download_data(source: str, out: str | None, limit: int | None, force: bool) -> int:
    """``download``: fetch, then say where and how many; 1 when the counts differ."""
    from .download import download

    options = {"limit": limit} if limit is not None else {}
    result = download(source, out, force=force, **options)
    print(result.summary())
    if not result.ok:
        print(f"error: {'; '.join(result.problems)} (see above)", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _run(args) -> int:
    from . import config

    uses_profile = args.command in ("reproduce", "quickstart", "export", "estimate") or (
        args.command == "predict" and not args.model)
    if args.command == "reproduce" and args.dry_run:
        args.profile = dry_run_profile_name(args.profile)
    if uses_profile and args.profile is None:
        check_profile_env()
    if uses_profile:
        check_artifacts_env()
    if args.command in ("reproduce", "quickstart"):
        check_folder_env("KD_DATA_DIR", config.data_dir())
    if args.command == "reproduce":
        import importlib.util

        select_notebooks(args.only)
        shard = check_shard(args.shard)
        if importlib.util.find_spec("papermill") is None:
            raise UsageError("reproduce needs papermill: pip install -e '.[notebooks]' (or pip install papermill)")
        check_students(args.students)
        return reproduce(args.profile, args.only, args.seeds, args.mixed_precision, args.jit, args.students,
                         shard)
    if args.command == "estimate":
        check_students(args.students)
        return estimate(args.profile, args.flops, args.steps, args.warmup, args.json, args.seeds,
                        args.mixed_precision, args.jit, args.students, args.step_times)
    if args.command == "export":
        return export(args.model, args.quantize, args.profile, args.out, args.calibration)
    if args.command == "predict":
        return predict(args.paths, args.model, args.profile, args.output)
    if args.command == "shortcuts":
        return shortcuts(args.model, args.folder, args.split, args.limit, args.seed, args.json)
    if args.command == "evaluate":
        return evaluate(args.model, args.folder, args.split, args.threshold, args.resamples, args.seed, args.json)
    if args.command == "download":
        check_folder_env("KD_DATA_DIR", config.data_dir())
        if args.out:
            _check_folder(Path(args.out), f"--out {args.out}")
        if args.limit is not None and args.source != "isic":
            raise UsageError("--limit applies to --source isic only (the Kaggle dataset comes whole)")
        return download_data(args.source, args.out, args.limit, args.force)
    if args.command == "benchmark":
        if args.out:
            _check_folder(Path(args.out), f"--out {args.out}")
        from .benchmark import run

        run(args.out, runs=args.runs, quick=args.quick)
        return EXIT_OK
    from .pipeline import quickstart

    overrides = {}
    if args.teacher_epochs is not None:
        overrides["teacher_epochs"] = args.teacher_epochs
    if args.student_epochs is not None:
        overrides["student_epochs"] = args.student_epochs
    quickstart(args.profile, **overrides)
    return EXIT_OK


def main(argv=None) -> int:
    """Run one command; returns the exit code. A user mistake is one ``error:`` line on stderr and 2."""
    try:
        return _run(build_parser().parse_args(argv))
    except UsageError as err:
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
