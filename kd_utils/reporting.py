"""Run records -> tables beside the paper's own numbers (:mod:`kd_utils.paper`).

Every table written here carries the profile, data source, split and
hardware it came from in its title, so a number never travels without its
context.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats

#: Test-split labels and logits of a run, next to its ``record.json``.
PREDICTIONS_FILE = "test_predictions.npz"

def hardware() -> str:
    """A short description of where this process runs (GPU name if any)."""
    try:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    except Exception:  # pragma: no cover - TensorFlow without device support
        pass
    from .config import cpu_description

    return cpu_description()


def split_label(profile, source) -> str:
    """How the data were split, for a table label: ``split pooled 70/30`` (a
    dataset's own train/test folders pooled and re-split, the paper's way),
    ``split dataset folders`` (its own folders kept) or ``split stratified
    70/30`` (a source without folders of its own, split here).

    ``source`` is a :class:`~kd_utils.data.Manifest` (the split it records) or
    a source name (then the profile's ``split`` applies to the ``folder``
    source, which has train/test folders in its usual layout).
    """
    from . import config

    known = profile if isinstance(profile, config.Profile) else config.PROFILES.get(profile)
    test = known.test_fraction if known is not None else 0.3
    if hasattr(source, "split_mode"):  # a Manifest
        mode = source.split_mode
        test = source.info.get("test_fraction", test)
    else:
        mode = known.split if known is not None and source == "folder" else None
    if mode == "folders":
        return "split dataset folders"
    ratio = f"{round(100 * (1 - test))}/{round(100 * test)}"
    return f"split {'pooled' if mode == 'pooled' else 'stratified'} {ratio}"


def label(profile, source) -> str:
    """``profile cpu | data synthetic | split stratified 70/30 | CPU (2 cores) | 2026-11-25``

    ``source``: a manifest, or its source name (see :func:`split_label`).
    """
    name = profile if isinstance(profile, str) else profile.name
    source_name = getattr(source, "source", source)
    return (f"profile {name} | data {source_name} | {split_label(profile, source)} | {hardware()} | "
            f"{datetime.date.today().isoformat()}")


def runs_of(value) -> list[dict]:
    """A record or a list of records (one per seed) as a list."""
    return value if isinstance(value, list) else [value]


def values(value, key: str = "accuracy") -> np.ndarray:
    """``record["test"][key]`` of every run."""
    return np.array([r["test"][key] for r in runs_of(value)], dtype=np.float64)


def per_class(runs, statistic: str = "mean") -> pd.DataFrame:
    """Per-class precision / recall / F1 of the test split, ``mean`` or ``std``
    (sample sd) over the runs; rows benign and malignant."""
    frames = [pd.DataFrame(r["test"]["per_class"]).T[["precision", "recall", "f1"]] for r in runs_of(runs)]
    return getattr(pd.concat(frames).groupby(level=0, sort=False), statistic)()


def sweep_table(records: dict, paper: dict, name: str) -> pd.DataFrame:
    """Table 1 / Table 6: mean validation and test accuracy over the seeds of
    each setting, the test standard deviation, the paper's test accuracy and
    the difference (ours - paper), indexed by ``name``."""
    rows = {}
    for k, value in records.items():
        runs = runs_of(value)
        mean, sd = stats.mean_sd(values(runs))
        rows[k] = {"val accuracy": float(np.mean([r["best_val_accuracy"] for r in runs])),
                   "test accuracy": mean, "test sd": sd, "seeds": len(runs), "paper (test)": paper.get(int(k))}
    table = pd.DataFrame(rows).T
    table["seeds"] = table["seeds"].astype(int)
    table["paper (test)"] = table["paper (test)"].astype(float)
    table["difference"] = table["test accuracy"] - table["paper (test)"]
    table.index.name = name
    return table


def sweep_forms_table(by_form: dict, paper: dict, name: str = "T") -> pd.DataFrame:
    """Table 1 for several loss forms side by side: ``by_form`` maps a form's
    name (e.g. ``"paper eq. (5)"``) to ``{T: runs}``. Per form the mean
    validation and test accuracy over seeds and the test sd; then the seeds,
    the paper's test accuracy and ours minus the paper's for the first form
    (the paper's own)."""
    parts, first = [], None
    for form, records in by_form.items():
        table = sweep_table(records, paper, name)
        first = table if first is None else first
        parts.append(table[["val accuracy", "test accuracy", "test sd"]].rename(
            columns=lambda c, f=form: f"{c}, {f}"))
    wide = pd.concat(parts, axis=1)
    wide["seeds"] = first["seeds"]
    wide["paper (test)"] = first["paper (test)"]
    wide[f"difference, {next(iter(by_form))}"] = first["difference"]
    wide.index.name = name
    return wide


def load_predictions(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, logits)`` of a run's test split (the record must carry ``run_dir``)."""
    if "run_dir" not in record:
        raise KeyError("This record has no 'run_dir': load it through kd_utils.experiments.pipeline.")
    with np.load(Path(record["run_dir"]) / PREDICTIONS_FILE) as saved:
        return saved["labels"], saved["logits"]


def correct_matrix(runs, labels=None) -> np.ndarray:
    """``(n_seeds, n_images)``: 1 where the run was right on that test image; rows in seed order.

    ``labels`` (e.g. ``manifest.split("test").label``): the test images'
    labels in the order the caller will read the columns in; a run whose
    recorded labels differ was scored on other images or in another order,
    and is refused rather than read against the wrong image."""
    runs = sorted(runs_of(runs), key=lambda r: r["config"]["seed"])
    wanted = None if labels is None else np.asarray(labels).astype(int)
    rows, previous = [], None
    for run in runs:
        recorded, logits = load_predictions(run)
        if wanted is not None and not np.array_equal(recorded, wanted):
            raise ValueError(f"Run {run.get('key', '?')} recorded {len(recorded)} test labels that are not "
                             f"the {len(wanted)} given, in their order: its columns are other images.")
        if previous is not None and not np.array_equal(recorded, previous):
            raise ValueError("These runs were scored on different test images: they cannot be paired.")
        previous = recorded
        rows.append((np.argmax(logits, axis=-1) == recorded).astype(np.float64))
    return np.stack(rows)


def kd_gain(kd_runs, no_kd_runs, n_resamples: int = 2000, confidence: float = 0.95) -> dict:
    """Test accuracy with minus without the teacher, paired by seed and by test
    image, with a percentile bootstrap interval (:func:`stats.paired_bootstrap`:
    ``low`` / ``high``) and, with 2 or more seeds, a paired t interval over the
    seeds' accuracies (``t_low`` / ``t_high``; NaN with one seed). With few
    seeds the bootstrap interval is too narrow when the gain varies by seed;
    the t interval accounts for that and is the one the headline uses."""
    kd_runs = sorted(runs_of(kd_runs), key=lambda r: r["config"]["seed"])
    no_kd_runs = sorted(runs_of(no_kd_runs), key=lambda r: r["config"]["seed"])
    seeds_kd = [r["config"]["seed"] for r in kd_runs]
    seeds_no = [r["config"]["seed"] for r in no_kd_runs]
    if seeds_kd != seeds_no:
        raise ValueError(f"Pair runs of the same seeds: with teacher {seeds_kd}, without {seeds_no}.")
    gain = stats.paired_bootstrap(correct_matrix(kd_runs), correct_matrix(no_kd_runs),
                                  n_resamples=n_resamples, confidence=confidence)
    gain["t_low"] = gain["t_high"] = float("nan")
    if len(kd_runs) >= 2:
        _, gain["t_low"], gain["t_high"] = stats.paired_t_interval(values(kd_runs), values(no_kd_runs), confidence)
    return gain


def mean_fidelity(runs) -> dict:
    """Mean top-1 agreement with the teacher and KL(teacher || student) at T = 1
    over the runs that recorded them (NaN when none did)."""
    found = [r["test"]["fidelity"] for r in runs_of(runs) if "fidelity" in r["test"]]
    if not found:
        return {"agreement": float("nan"), "kl": float("nan")}
    return {k: float(np.mean([f[k] for f in found])) for k in ("agreement", "kl")}


def kd_table(kd: dict, no_kd: dict, n_resamples: int = 2000) -> pd.DataFrame:
    """Table 2 with the baseline: per student, size and time, test accuracy
    with the teacher and without (mean and sd over seeds), the KD gain with its
    95% paired bootstrap and paired t intervals, and the student's fidelity to
    the teacher (top-1 agreement, KL at T = 1; from the runs with a teacher)."""
    rows = {}
    for name, runs in kd.items():
        runs = runs_of(runs)
        acc, sd = stats.mean_sd(values(runs))
        base, base_sd = stats.mean_sd(values(no_kd[name]))
        gain = kd_gain(runs, no_kd[name], n_resamples)
        fid = mean_fidelity(runs)
        rows[name] = {
            "params_m": runs[0]["test"]["params"]["trainable"] / 1e6,
            "train_s": float(np.mean([r["train_seconds"] for r in runs])),
            "predict_s": float(np.mean([r["test"]["prediction_seconds"] for r in runs])),
            "accuracy": acc, "sd": sd, "no KD": base, "no KD sd": base_sd,
            "KD gain": gain["difference"], "gain 95% low": gain["low"], "gain 95% high": gain["high"],
            "gain t95% low": gain["t_low"], "gain t95% high": gain["t_high"],
            "agreement": fid["agreement"], "KL(t||s)": fid["kl"],
            "seeds": len(runs),
        }
    table = pd.DataFrame(rows).T
    table["seeds"] = table["seeds"].astype(int)
    return table


def calibration_table(named_runs: dict, n_bins: int = 10) -> pd.DataFrame:
    """Expected calibration error of the malignant probability (and accuracy),
    mean and sd over the runs of each model."""
    rows = {}
    for name, runs in named_runs.items():
        eces = []
        for run in runs_of(runs):
            labels, logits = load_predictions(run)
            eces.append(stats.expected_calibration_error(labels, _softmax(logits)[:, 1], n_bins))
        ece, ece_sd = stats.mean_sd(eces)
        acc, acc_sd = stats.mean_sd(values(runs))
        rows[name] = {"ECE": ece, "ECE sd": ece_sd, "accuracy": acc, "accuracy sd": acc_sd, "runs": len(eces)}
    table = pd.DataFrame(rows).T
    table["runs"] = table["runs"].astype(int)
    return table


def pooled_probabilities(runs) -> tuple[np.ndarray, np.ndarray]:
    """Labels and malignant probabilities of every run, concatenated (for a reliability diagram)."""
    pairs = [load_predictions(r) for r in runs_of(runs)]
    return (np.concatenate([p[0] for p in pairs]),
            np.concatenate([_softmax(p[1])[:, 1] for p in pairs]))


def _softmax(logits):
    from .evaluation import softmax

    return softmax(np.asarray(logits, dtype=np.float64))


def write_table(table: pd.DataFrame, folder, name: str, title: str) -> Path:
    """``<name>.csv`` and ``<name>.md`` (a titled markdown table) in ``folder``.
    In the markdown, row labels of several levels (model, class) become one
    column each and column labels of several levels are joined by ": ", so no
    header or row reads as a Python tuple."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{name}.csv")
    shown = table
    if isinstance(shown.columns, pd.MultiIndex):
        shown = shown.set_axis([": ".join(str(part) for part in label) for label in shown.columns], axis=1)
    several_levels = isinstance(shown.index, pd.MultiIndex)
    if several_levels:
        shown = shown.reset_index()
    # counts (seeds, runs) print as integers, everything else with 3 decimals
    formats = (() if several_levels else ("g",)) + tuple(
        ".0f" if pd.api.types.is_integer_dtype(t) else ".3f" for t in shown.dtypes)
    markdown = shown.to_markdown(index=not several_levels, floatfmt=formats)
    (folder / f"{name}.md").write_text(f"### {title}\n\n{markdown}\n")
    return folder / f"{name}.md"


def load_record(path) -> dict:
    return json.loads(Path(path).read_text())


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """``ours`` with the paper's columns (suffixed " (paper)") joined on the index."""
    return ours.join(paper.add_suffix(" (paper)"))


def teacher_check(teacher_record: dict, no_kd_runs) -> str | None:
    """A warning when the teacher does not beat, on validation, the student
    trained without it (mean over seeds); None when it does. A teacher that
    knows less than the student cannot be expected to help it."""
    teacher = teacher_record["best_val_accuracy"]
    student = float(np.mean([r["best_val_accuracy"] for r in runs_of(no_kd_runs)]))
    if teacher > student:
        return None
    return (f"WARNING: the teacher's validation accuracy ({teacher:.3f}) does not beat the student trained "
            f"without it ({student:.3f}, mean over {len(runs_of(no_kd_runs))} seeds): distillation from this "
            "teacher cannot be expected to help.")


def epochs_trained(record: dict) -> int:
    """How many epochs a run trained (fewer than its schedule when patience stopped it)."""
    return len(next(iter(record["history"].values())))


def convergence_table(teacher_record: dict, students: dict) -> pd.DataFrame:
    """The teacher beside groups of student runs (``{name: runs}``): epochs
    trained and best epoch of each run, validation and test accuracy (mean
    over runs), and the teacher's lead in validation accuracy over each group
    (NaN in the teacher's row). A run whose best epoch is its last was still
    learning when it stopped."""
    teacher_val = teacher_record["best_val_accuracy"]
    rows = {}
    for name, runs in {"teacher": [teacher_record], **students}.items():
        runs = runs_of(runs)
        val = float(np.mean([r["best_val_accuracy"] for r in runs]))
        rows[name] = {"runs": len(runs), "epochs trained": ", ".join(str(epochs_trained(r)) for r in runs),
                      "best epoch": ", ".join(str(r["best_epoch"]) for r in runs), "validation": val,
                      "test": float(values(runs).mean()),
                      "teacher's lead (validation)": np.nan if name == "teacher" else teacher_val - val}
    return pd.DataFrame(rows).T.infer_objects()


def controls_table(real, controls: dict, n_resamples: int = 2000) -> pd.DataFrame:
    """The real teacher beside controls that keep the student, budget and seeds
    but not the teacher's knowledge (no teacher, uniform teacher, shuffled
    teacher): test accuracy (mean, sd), fidelity to the real teacher, and the
    real teacher's gain over each control with its paired t interval over
    seeds and its paired bootstrap interval."""
    rows = {}
    for name, runs in {**controls, "real teacher": real}.items():
        acc, sd = stats.mean_sd(values(runs))
        fid = mean_fidelity(runs)
        row = {"accuracy": acc, "sd": sd, "agreement": fid["agreement"], "KL(t||s)": fid["kl"]}
        if name != "real teacher":
            gain = kd_gain(real, runs, n_resamples)
            row.update({"real - this": gain["difference"], "t95% low": gain["t_low"], "t95% high": gain["t_high"],
                        "bootstrap low": gain["low"], "bootstrap high": gain["high"]})
        rows[name] = row
    return pd.DataFrame(rows).T


def dataset_name(manifest) -> str:
    """What a manifest's images are, for ``kd_summary.json``: the Kaggle
    dataset's handle, ``generated images (synthetic)``, or source and folder."""
    from . import config

    root = str(manifest.info.get("root", ""))
    if manifest.source == "synthetic":
        return "generated images (synthetic), not real lesions"
    if manifest.source == "folder" and root.rstrip("/").endswith(config.KAGGLE_FOLDER):
        return f"kaggle:{config.KAGGLE_HANDLE}"
    return f"{manifest.source}: {root}"


def kd_summary(teacher_record: dict, real, controls: dict, no_teacher: str, settings: dict,
               n_resamples: int = 2000, data: str | None = None) -> dict:
    """The headline numbers: the KD gain that matters is the real teacher minus
    the best of the controls (by mean test accuracy), with its paired t
    interval over seeds (the bootstrap interval beside it); the teacher's and
    the no-teacher DSNet's validation accuracy (what says whether the teacher
    leads, chosen on nothing else); ``data`` (:func:`dataset_name`) and the seeds."""
    best = max(controls, key=lambda name: float(values(controls[name]).mean()))
    gain = kd_gain(real, controls[best], n_resamples)
    runs = runs_of(real)
    return {
        "data": data,
        "seeds": [r.get("config", {}).get("seed") for r in runs],
        "teacher_accuracy": float(teacher_record["test"]["accuracy"]),
        "teacher_val_accuracy": float(teacher_record["best_val_accuracy"]),
        "dsnet_nokd_accuracy": float(values(controls[no_teacher]).mean()),
        "dsnet_nokd_val_accuracy": float(np.mean([r["best_val_accuracy"] for r in runs_of(controls[no_teacher])])),
        "dsnet_kd_accuracy": float(values(real).mean()),
        "kd_gain": gain["difference"], "kd_gain_low": gain["t_low"], "kd_gain_high": gain["t_high"],
        "kd_gain_interval": "95% paired t interval over seeds (real teacher minus the best control)",
        "kd_gain_bootstrap_low": gain["low"], "kd_gain_bootstrap_high": gain["high"],
        "best_control": best,
        "controls": {name: float(values(runs).mean()) for name, runs in controls.items()},
        "fidelity": mean_fidelity(real),
        "n_seeds": len(runs),
        **settings,
    }
