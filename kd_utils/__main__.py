"""Command line.

``python -m kd_utils reproduce [--profile paper|cpu|smoke]``
    Runs the notebooks in order with papermill; executed copies, tables
    (markdown + CSV) and figures (PNG) go to ``results/<profile>/``.
``python -m kd_utils quickstart [--profile ...]``
    Data, teacher and distilled DSNet without notebooks; prints the metrics.
``python -m kd_utils export MODEL --format tflite --quantize none|dynamic|int8|all``
    A .keras model (or ``dsnet``: the profile's final distilled DSNet) as
    TFLite; compares Keras and TFLite on the profile's test split.
``python -m kd_utils predict IMAGE_OR_DIR... [--model PATH]``
    Malignant probability per image with a .keras or .tflite model.
    A research tool, not a diagnostic device.
``python -m kd_utils benchmark [--out DIR] [--runs N] [--quick]``
    Size, FLOPs, latency and throughput of DSNet and larger models on this
    machine, and what precomputed teacher logits save in training.
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
    beyond = sorted(p.name for p in config.results_dir(profile).glob("*.md") if not p.name.startswith("table"))
    if beyond:
        print("Beyond the paper (KD gain, ablation, calibration, leakage; notebook 07): " + ", ".join(beyond))
    print(f"Tables, figures and executed notebooks: {config.results_dir(profile)}")
    return 0


def _tflite_name(quantize: str) -> str:
    return {"none": "float32", "dynamic": "dynamic_int8", "int8": "int8"}[quantize]


def export(model_arg: str, quantizations: list[str], profile_name: str | None, out: str | None) -> int:
    """Export a .keras model to TFLite and compare it with Keras on the test split."""
    from . import config, deploy, pipeline

    profile = config.get_profile(profile_name)
    wanted = list(deploy.QUANTIZATIONS) if "all" in quantizations else list(dict.fromkeys(quantizations))
    try:
        keras_path = pipeline.final_student_path(profile) if model_arg.lower() == "dsnet" else Path(model_arg)
        if keras_path.suffix.lower() != ".keras":
            raise ValueError(f"MODEL must be a .keras file or 'dsnet'; got {keras_path}.")
        reference = deploy.load_model(keras_path)
    except (pipeline.MissingStepError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if out and Path(out).suffix.lower() == ".tflite":
        if len(wanted) > 1:
            print(f"error: --out {out} names one file but {len(wanted)} quantizations were asked for; "
                  "give a directory instead.", file=sys.stderr)
            return 2
        targets = {wanted[0]: Path(out)}
    else:
        folder = Path(out) if out else keras_path.parent
        targets = {q: folder / f"{keras_path.stem}_{_tflite_name(q)}.tflite" for q in wanted}
    try:
        manifest = pipeline.load_manifest(profile)
    except pipeline.MissingStepError as err:
        if "int8" in wanted:
            print(f"error: int8 needs representative images from the training split: {err}", file=sys.stderr)
            return 2
        print(f"note: no evaluation on the test split: {err}", file=sys.stderr)
        manifest = None
    representative = None
    if "int8" in wanted:
        representative = deploy.representative_images(manifest, reference.image_size, n=200, seed=profile.seed)
        print(f"int8 calibration: {len(representative)} images of the {profile.name} training split")
    for quantize, target in targets.items():
        t0 = time.perf_counter()
        deploy.export_tflite(reference.model, target, quantize, representative)
        print(f"wrote {target} ({quantize}, {target.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f} s")
    print(f"Keras model {keras_path}: {keras_path.stat().st_size / 1e6:.2f} MB")
    from .model_card import write_for_export  # MODEL_CARD.md next to the exported files
    if manifest is None:
        print(f"wrote {write_for_export(reference.model, keras_path, targets.values(), profile)}")
        return 0
    table = deploy.compare_on_split(reference, list(targets.values()), manifest, "test")
    table["size_mb"] = table.size_bytes / 1e6
    columns = ["model", "format", "size_mb", "accuracy", "auc_malignant", "accuracy_loss", "agreement", "max_prob_diff"]
    print(f"\nTest split of profile {profile.name} ({table.n.iloc[0]} images); "
          "accuracy_loss = Keras accuracy minus this model's:")
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {write_for_export(reference.model, keras_path, targets.values(), profile, manifest, table)}")
    return 0


def predict(paths: list[str], model: str | None, profile_name: str | None) -> int:
    """Print the malignant probability of every image; errors go to stderr."""
    from . import config, deploy, pipeline

    print(deploy.DISCLAIMER)
    try:
        model_path = Path(model) if model else pipeline.final_student_path(config.get_profile(profile_name))
        runner = deploy.load_model(model_path)
    except (pipeline.MissingStepError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = deploy.predict_paths(paths, runner)
    good = [r for r in results if r.ok]
    if good:
        width = max(len("file"), *(len(r.path) for r in good))
        print(f"{'file':<{width}}  malignant_probability  prediction")
        for r in good:
            print(f"{r.path:<{width}}  {r.malignant_probability:>21.4f}  {r.label}")
    for r in results:
        if not r.ok:
            print(f"error: {r.path}: {r.error}", file=sys.stderr)
    print(f"{len(good)} of {len(results)} file(s) predicted with {model_path} ({runner.image_size}px).")
    return 0 if good else 1


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
    exp = sub.add_parser("export", help="export a .keras model to TFLite and compare on the test split")
    exp.add_argument("model", metavar="MODEL", help="a .keras file, or 'dsnet' for the profile's final distilled DSNet")
    exp.add_argument("--format", choices=["tflite"], default="tflite")
    exp.add_argument("--quantize", nargs="+", choices=["none", "dynamic", "int8", "all"], default=["none"],
                     help="none (float32), dynamic (int8 weights), int8 (full integer, uint8 input); several or all")
    exp.add_argument("--profile", default=None, help="whose model, training split (int8) and test split (default: cpu)")
    exp.add_argument("--out", default=None, help="a .tflite file (one quantization) or a folder (default: the model's folder)")
    pred = sub.add_parser("predict", help="malignant probability per image (research use only)")
    pred.add_argument("paths", nargs="+", metavar="IMAGE_OR_DIR")
    pred.add_argument("--model", default=None, help=".keras or .tflite file (default: the profile's final DSNet)")
    pred.add_argument("--profile", default=None, help="profile of the default model (default: $KD_PROFILE or cpu)")
    bench = sub.add_parser("benchmark", help="size, FLOPs, latency, throughput and training-side timings on this machine")
    bench.add_argument("--out", default=None, help="folder for benchmark.md/.csv/.png (default: results/benchmark)")
    bench.add_argument("--runs", type=int, default=None, help="timed batch-1 calls per model (default 50)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes and counts: checks that it runs, numbers meaningless")
    args = parser.parse_args(argv)

    if args.command == "reproduce":
        return reproduce(args.profile, args.only)
    if args.command == "export":
        return export(args.model, args.quantize, args.profile, args.out)
    if args.command == "predict":
        return predict(args.paths, args.model, args.profile)
    if args.command == "benchmark":
        from .benchmark import run

        run(args.out, runs=args.runs, quick=args.quick)
        return 0
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
