"""What each command of ``python -m kd_utils`` does (its options are parsed in
:mod:`kd_utils.__main__`, whose docstring is the usage).

Every check of an argument, a path or an environment variable raises
:class:`UsageError` with the one line the user sees (exit 2), before
TensorFlow is imported; each command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from .. import paths

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """A mistake in the command line or its environment; the message is the one line shown."""


def notebooks_dir() -> Path:
    return paths.repo_root() / "notebooks"


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
    from .. import config

    value = os.environ.get("KD_PROFILE")
    if value and value not in config.profile_names():
        raise UsageError(
            f"KD_PROFILE={value!r} is not a profile; expected one of {', '.join(config.profile_names())} "
            "(or unset it, or pass --profile)"
        )


def dry_run_profile_name(profile: str | None) -> str:
    """``--dry-run`` runs the paper profile (or ``colab-robust``) on stand-ins; another ``--profile`` is refused."""
    from .. import config

    if profile not in (None, *config.DRY_RUNS):
        raise UsageError(f"--dry-run runs the paper profile's code path on stand-ins; it does not apply to "
                         f"--profile {profile} (leave --profile out, or give --profile "
                         f"{' or '.join(config.DRY_RUNS)})")
    return config.DRY_RUNS[profile or "paper"]


def check_folder(path: Path, what: str) -> None:
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
    check_folder(path, f"{name}={value}" if value else f"{path} (default for {name})")


def check_shard(value: str | None) -> str | None:
    """``--shard`` (else ``KD_SHARD``) as ``"i/n"``, and ``KD_SHARD_WAIT``: UsageError when malformed."""
    from ..experiments import shard

    try:
        shard.wait_seconds()
        if value is not None:
            return str(shard.parse(value))
        found = shard.from_env()
    except ValueError as err:
        raise UsageError(f"--shard {value}: {err}" if value is not None else str(err)) from None
    return None if found is None else str(found)


def check_artifacts_env() -> None:
    check_folder_env("KD_ARTIFACTS", paths.artifacts_dir())


def check_model_arg(value: str, option: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(value)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"Unsupported model file {value} ({option}): expected a {' or '.join(suffixes)} file, "
                         f"got suffix {path.suffix or '(none)'!r}")
    if not path.exists():
        raise UsageError(f"{option} {value}: no such file")
    if not path.is_file():
        raise UsageError(f"{option} {value}: is a folder, expected a {' or '.join(suffixes)} file")
    return path


def check_calibration(folder: str, wanted: list[str]) -> Path:
    from . import deploy, tflite_export

    if "int8" not in wanted:
        raise UsageError(f"--calibration {folder}: only int8 is calibrated; add --quantize int8 or drop --calibration")
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"--calibration {folder}: {'not a folder' if path.exists() else 'no such folder'}; "
                         "expected a folder of .jpg/.jpeg/.png images")
    low, high = tflite_export.CALIBRATION_RANGE
    found = sum(1 for p in deploy.expand_paths(path) if p.is_file())
    if found < low:
        raise UsageError(f"--calibration {folder}: {found} .jpg/.jpeg/.png file(s); int8 calibration needs "
                         f"{low} to {high} images like the ones the model will see")
    return path


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
    from ..experiments import notebook

    books = select_notebooks(only)
    import papermill

    if shard:
        os.environ["KD_SHARD"] = shard  # read by kd_utils in the notebooks' kernels
        print(f"Shard {shard}: this session trains its share of every sweep's runs and waits for the other "
              "shards' (artifacts folder shared); the tables are made once every run is there.")

    if profile_name is None:
        profile_name, why = notebook.auto_profile()
        print(f"Profile {profile_name}: {why}.")
    profile = notebook.notebook_profile(profile_name, tuple(seeds or ()), mixed_precision, jit, tuple(students or ()))
    if profile.stand_ins:
        print(f"Dry run of the paper profile on stand-ins ({profile.image_size} px, weights files in {profile.weights}, "
              f"images in {profile.data_root}): it checks the code path, its numbers mean nothing.", flush=True)
    from ..experiments.download import ensure_data

    fetched = ensure_data(profile)  # a failed download stops here, in one line, before any notebook
    if fetched is not None:
        print(fetched.summary(), flush=True)
    out_dir = paths.results_dir(profile) / "notebooks"
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
    for table in sorted(paths.results_dir(profile).glob("table*.md")):
        print(table.read_text())
    beyond = sorted(p.name for p in paths.results_dir(profile).glob("*.md") if not p.name.startswith("table"))
    if beyond:
        print("Beyond the paper's tables (artefacts, convergence, KD gain, ablation, calibration, leakage): "
              + ", ".join(beyond))
    print(f"Tables, figures and executed notebooks: {paths.results_dir(profile)}")
    return EXIT_OK


def estimate(profile_name: str | None, flops: bool, steps: int, warmup: int, as_json: bool, seeds=None,
             mixed_precision: bool = False, jit: bool = False, students=None, step_times: str | None = None) -> int:
    """Print the runs of notebooks 02-07 and their hours (see :mod:`kd_utils.tools.estimate`)."""
    from .. import config

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
                                 "`python -m kd_utils.tools.steptime --out FILE` writes (image_size, batch_size, models)")
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


def _tflite_name(quantize: str) -> str:
    return {"none": "float32", "dynamic": "dynamic_int8", "int8": "int8"}[quantize]


def export(model_arg: str, quantizations: list[str], profile_name: str | None, out: str | None,
           calibration: str | None = None) -> int:
    """Export a .keras model to TFLite and compare it with Keras on the test split."""
    from . import deploy, tflite_export

    wanted = list(tflite_export.QUANTIZATIONS) if "all" in quantizations else list(dict.fromkeys(quantizations))
    if model_arg.lower() != "dsnet":
        if Path(model_arg).suffix.lower() == ".tflite":
            raise UsageError(f"MODEL {model_arg}: MODEL must be a .keras file or 'dsnet'; a .tflite file is exported already")
        check_model_arg(model_arg, "MODEL", (".keras",))
    if out and Path(out).suffix.lower() == ".tflite" and len(wanted) > 1:
        raise UsageError(f"--out {out} names one file but {len(wanted)} quantizations were asked for; "
                         "give a folder instead")
    if out and Path(out).suffix.lower() != ".tflite":
        check_folder(Path(out), f"--out {out}")
    calibration_dir = check_calibration(calibration, wanted) if calibration else None

    from .. import config  # TensorFlow from here on
    from ..experiments import choices, pipeline

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
            representative, skipped = tflite_export.calibration_images(calibration_dir, reference.image_size, seed=profile.seed)
        except tflite_export.CalibrationError as err:
            raise UsageError(str(err)) from err
        note = f"; {len(skipped)} file(s) refused, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        print(f"int8 calibration: {len(representative)} images of {calibration_dir}{note}")
    elif "int8" in wanted:
        representative = tflite_export.representative_images(manifest, reference.image_size, n=200, seed=profile.seed)
        print(f"int8 calibration: {len(representative)} images of the {profile.name} training split")
    from .model_card import write_for_export  # MODEL_CARD.md next to the exported files
    from ..storage import read_json
    from ..training import RECORD_FILE, damaged

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
            tflite_export.export_tflite(reference.model, target, quantize, representative)
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
        model_path = check_model_arg(model, "--model", deploy.MODEL_SUFFIXES)
    notes = sys.stdout if output == "table" else sys.stderr
    print(deploy.DISCLAIMER, file=notes)

    from .. import config  # TensorFlow from here on
    from ..experiments import choices, pipeline

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


def _folder_runner(model: str, folder: str, split: str | None):
    """The runner of a ``.keras`` / ``.tflite`` file for scoring a labelled
    folder; the path and the folder are checked before TensorFlow is imported
    (a mistake in either: one line, exit 2)."""
    from . import deploy, external

    model_path = check_model_arg(model, "MODEL", deploy.MODEL_SUFFIXES)
    external.labelled_images(folder, split)  # a DataError (exit 2) before the model is loaded
    try:
        return deploy.load_model(model_path)  # TensorFlow from here on
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err


def evaluate(model: str, folder: str, split: str | None = None, threshold: float = 0.5, resamples: int = 2000,
             seed: int = 0, as_json: bool = False) -> int:
    """``evaluate``: a model's metrics on a labelled folder (:mod:`kd_utils.tools.external`).

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
    """``shortcuts``: the lesion-preserving battery on a labelled folder (:mod:`kd_utils.tools.shortcuts`)."""
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
        print(f"The last {len(battery.FLOOR)} rows are the floor (mirror, quarter turn: nothing a reader of the "
              "lesion uses changes); a transform that flips about as many calls is as steady as the model gets.")
    return EXIT_OK


def check_screen(settings: list[str] | None, views: list[str] | None) -> tuple[dict, dict]:
    """``screen``'s ``--set`` and ``--view`` as dicts, each checked (a bad one is a usage error)."""
    from . import screen as screening

    try:
        return (dict(screening.parse_setting(t) for t in settings or ()),
                dict(screening.parse_view(t) for t in views or ()))
    except screening.ScreenError as err:
        raise UsageError(str(err)) from None


def screen(profile_name: str | None, settings: dict, views: dict, models: list[str], seeds=None,
           converged: bool = False, as_json: bool = False) -> int:
    """``screen``: a candidate setting on the validation split and the battery (:mod:`kd_utils.tools.screen`)."""
    from .. import config
    from . import screen as screening

    profile = config.get_profile(profile_name)
    try:  # the settings were parsed by check_screen: what is left to refuse is a value or the schedule
        screening.profiles(profile, settings, converged, seeds)
    except screening.ScreenError as err:
        raise UsageError(f"--converged: {err}") from None
    except ValueError as err:
        raise UsageError(f"--set: {err}") from None
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if as_json else print
    result = screening.screen(profile, settings, views, models=tuple(models), seeds=seeds, converged=converged,
                              log=log)
    if as_json:
        import json

        print(json.dumps(result.to_json(), indent=2))
    else:
        print()
        print(screening.text(result))
    return EXIT_OK


def download_data(source: str, out: str | None, limit: int | None, force: bool) -> int:
    """``download``: fetch, then say where and how many; 1 when the counts differ."""
    from ..experiments.download import download

    options = {"limit": limit} if limit is not None else {}
    result = download(source, out, force=force, **options)
    print(result.summary())
    if not result.ok:
        print(f"error: {'; '.join(result.problems)} (see above)", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def quickstart(profile_name: str | None = None, **overrides) -> dict:
    """Data -> teacher -> distilled DSNet on the profile; prints the test metrics."""
    from .. import config
    from ..experiments.pipeline import distill_student, prepare_data, summary_line, train_teacher

    profile = config.get_profile(profile_name, **overrides)
    start = time.perf_counter()
    print(f"Profile {profile.name}: {profile.data_source} data at {profile.image_size}px, "
          f"weights={profile.weights}, teacher {profile.teacher_epochs} / student {profile.student_epochs} epochs")
    manifest = prepare_data(profile)
    print(f"Data ({manifest.source}, {manifest.info['root']}):\n{manifest.counts()}")
    excluded = (manifest.report.status == "excluded").sum()
    print(f"Validation report: {len(manifest.report)} entries, {excluded} excluded")
    teacher, teacher_record = train_teacher(profile, manifest)
    student, student_record = distill_student(profile, manifest, teacher)
    print("\nTest split (" + f"{manifest.counts().loc['test', 'total']} images):")
    print(summary_line("Teacher ResNet50", teacher_record))
    print(summary_line(f"DSNet (KD, T={profile.temperature:g})", student_record))
    print(f"Artifacts: {paths.artifacts_dir(profile)}   total {time.perf_counter() - start:.0f}s")
    return {"teacher": teacher_record, "dsnet": student_record}
