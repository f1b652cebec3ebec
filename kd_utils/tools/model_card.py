"""``MODEL_CARD.md`` beside an exported model: what the model is, what it was
trained and tested on, how well it did (with intervals), how calibrated its
probabilities are, what quantization cost, what it is for, and what it is not.

* :func:`render` turns given facts into Markdown. It never makes a number
  up: a section without inputs says that nothing was measured, and every
  number is printed with the source it was given with.
* :func:`model_facts` counts a Keras model: layers, input size, parameters
  (:func:`kd_utils.models.count_params`) and FLOPs per image
  (:func:`kd_utils.tools.flops.analytic_flops`).
* :func:`metric` builds one row of the metrics or calibration table.
* :func:`write_for_export` is what ``python -m kd_utils export`` calls: it
  gathers the model, its run record and test predictions when they lie next
  to the ``.keras`` file, the manifest's split and the Keras / TFLite
  comparison, and writes ``MODEL_CARD.md`` next to the exported files.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..models import CLASS_NAMES

FILENAME = "MODEL_CARD.md"

INTENDED_USE = (
    "Research and teaching: reproducing knowledge distillation from a ResNet50 teacher into a small CNN "
    "for benign (0) vs malignant (1) dermoscopic images, comparing students with and without the teacher, "
    "and studying what compression and quantization cost in accuracy, size and latency."
)
OUT_OF_SCOPE = (
    "any clinical use: diagnosis, screening, triage, or deciding whether a lesion is examined or removed; "
    "use by patients on their own skin; images that are not dermoscopic (phone or clinical photographs), "
    "and diagnoses other than benign / malignant melanocytic lesions."
)
LIMITATIONS = (
    "Tested on one split of one dataset; no external validation on images from other clinics, devices "
    "or populations, so accuracy there is unknown.",
    "Performance across skin tones, ages, body sites and dermoscopes has not been measured; the "
    "training images do not record skin tone.",
    "Malignant is predicted when its probability is at least 0.5; this threshold was not tuned for "
    "sensitivity, and a missed melanoma (a false negative) costs far more than a false alarm.",
    "The probabilities are not guaranteed to be calibrated (see Calibration).",
    "Input: an RGB image with pixel values 0-255, resized to the model's input size; EXIF orientation "
    "is not applied, neither in training nor in prediction.",
)
SYNTHETIC_LIMITATION = (
    "Trained and tested on **synthetic** images generated to resemble dermoscopy (`kd_utils.synthetic`), "
    "not on real lesions: its numbers show that the pipeline works, and say nothing about melanoma."
)
NOT_A_DEVICE = (
    "This model is not a medical device and has not been clinically validated or approved by any "
    "regulator. It must not be used to diagnose, screen for or rule out melanoma, or to make any "
    "decision about a person's care."
)


def _disclaimer() -> str:
    from .deploy import DISCLAIMER

    return DISCLAIMER


# --------------------------------------------------------------------------- inputs


def metric(name: str, value: float, *, source: str, sd: float | None = None, n: int | None = None,
           low: float | None = None, high: float | None = None, interval: str | None = None) -> dict:
    """One row of the metrics (or calibration) table.

    ``sd`` and ``n``: spread over ``n`` runs (seeds); ``low`` / ``high``: an
    interval, described by ``interval`` (e.g. "95% bootstrap over test
    images"); ``source``: where the numbers come from.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: the value must be a finite number, got {value}.")
    if (low is None) != (high is None):
        raise ValueError(f"{name}: give both ends of the interval or neither.")
    if low is not None and not float(low) <= value <= float(high):
        raise ValueError(f"{name}: {value} lies outside its interval [{low}, {high}].")
    if not source:
        raise ValueError(f"{name}: say where the number comes from (source).")
    return {"name": name, "value": value, "sd": None if sd is None or not math.isfinite(sd) else float(sd),
            "n": None if n is None else int(n), "low": None if low is None else float(low),
            "high": None if high is None else float(high), "interval": interval, "source": source}


def model_facts(model) -> dict:
    """Layers, input size, parameters and analytic FLOPs per image of a Keras model."""
    from .. import models
    from . import flops

    layers = [
        {"name": layer.name, "type": type(layer).__name__,
         "output": "x".join(str(d) for d in tuple(layer.output.shape)[1:]), "params": int(layer.count_params())}
        for layer in model.layers
    ]
    source = "counted from the model (kd_utils.models.count_params, kd_utils.tools.flops.analytic_flops)"
    image_size = int(model.input_shape[1])
    return {
        "name": model.name,
        "layers": layers,
        "image_size": image_size,
        "params": {**models.count_params(model), "source": source},
        "flops": {**flops.analytic_flops(model), "image_size": image_size, "source": source},
    }


# --------------------------------------------------------------------------- formatting


def _number(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _metric_rows(rows: Sequence[dict], digits: int) -> list[str]:
    out = []
    for r in rows:
        value = _number(r["value"], digits)
        if r.get("sd") is not None:
            value += f" ± {_number(r['sd'], digits)}"
        if r.get("n"):
            value += f" (n={r['n']})"
        interval = ""
        if r.get("low") is not None:
            interval = f"[{_number(r['low'], digits)}, {_number(r['high'], digits)}]"
            if r.get("interval"):
                interval += f" {r['interval']}"
        out.append((r["name"], value, interval, r["source"]))
    return _table(("measure", "value", "interval", "source"), out)


def _quantization_lines(quantization, source: str, digits: int) -> list[str]:
    import pandas as pd

    table = pd.DataFrame(quantization).copy()
    if "size_mb" not in table and "size_bytes" in table:
        table["size_mb"] = table["size_bytes"].astype(float) / 1e6
    columns = [c for c in ("model", "format", "size_mb", "accuracy", "auc_malignant", "accuracy_loss",
                           "agreement", "max_prob_diff") if c in table]
    names = {"size_mb": "size (MB)", "auc_malignant": "AUC malignant", "accuracy_loss": "accuracy loss",
             "agreement": "agreement with Keras", "max_prob_diff": "max. probability difference"}
    rows = [[_number(row[c], 2 if c == "size_mb" else digits + 1) if c not in ("model", "format") else row[c]
             for c in columns] for _, row in table.iterrows()]
    lines = _table([names.get(c, c) for c in columns], rows)
    if "accuracy_loss" in table and len(table) > 1:
        worst = table.iloc[1:]["accuracy_loss"].astype(float)
        k = worst.idxmax()
        lines += ["", f"Largest accuracy loss against the Keras model: {_number(worst[k], digits + 1)} "
                      f"({table.loc[k, 'model']})."]
    lines += ["", f"Source: {source}. Accuracy loss = Keras accuracy minus this model's; agreement = share "
                  "of images with the same predicted class as the Keras model."]
    return lines


def render(name: str, *, architecture: str, input_description: str | None = None, layers: Sequence[dict] | None = None,
           params: dict | None = None, flops: dict | None = None, training: dict | None = None,
           split_counts: dict | None = None, metrics: Sequence[dict] = (), calibration: Sequence[dict] = (),
           quantization=None, quantization_source: str | None = None, synthetic_data: bool = False,
           notes: Sequence[str] = (), generated: str | None = None, digits: int = 3) -> str:
    """The card as Markdown.

    ``params``: ``total`` / ``trainable`` / ``non_trainable`` with a
    ``source``; ``flops``: ``total`` (and ``conv_dense``), ``image_size``,
    ``source``. ``training``: labels to values, with a ``source`` key.
    ``split_counts``: ``{"source": ..., "counts": {split: {"benign": n,
    "malignant": n}}}``. ``metrics`` and ``calibration``: rows of
    :func:`metric`. ``quantization``: the table of
    :func:`kd_utils.tools.deploy.compare_on_split` (or rows like it) with
    ``quantization_source``. ``notes``: sentences added under the heading.
    """
    lines = [f"# Model card: {name}", "", f"> **{_disclaimer()}**", ""]
    lines += [f"Generated by `kd_utils.tools.model_card` on {generated or datetime.date.today().isoformat()}. "
              "Every number names its source; what was not measured is left out, not estimated.", ""]
    lines += [*notes, ""] if notes else []

    lines += ["## Model", "", f"Architecture: {architecture}", ""]
    if input_description:
        lines += [f"Input and output: {input_description}", ""]
    if layers:
        lines += _table(("layer", "type", "output shape", "parameters"),
                        [(l["name"], l["type"], l["output"], _number(int(l["params"]))) for l in layers]) + [""]
    if params:
        parts = [f"{_number(int(params[k]))} {label}" for k, label in
                 (("total", "in total"), ("trainable", "trainable"), ("non_trainable", "non-trainable")) if k in params]
        lines += [f"Parameters: {', '.join(parts)}. Source: {params['source']}.", ""]
    if flops:
        conv = f" ({_number(int(flops['conv_dense']))} in convolutions and dense layers)" if "conv_dense" in flops else ""
        lines += [f"FLOPs per image at {flops['image_size']}x{flops['image_size']}: {_number(int(flops['total']))}"
                  f"{conv}; a multiply-accumulate counts 2 (`kd_utils.tools.flops`). Source: {flops['source']}.", ""]

    lines += ["## Training data and split", ""]
    if split_counts:
        counts = split_counts["counts"]
        rows = [(split, _number(int(c[CLASS_NAMES[0]])), _number(int(c[CLASS_NAMES[1]])),
                 _number(int(c[CLASS_NAMES[0]]) + int(c[CLASS_NAMES[1]]))) for split, c in counts.items()]
        lines += _table(("split", *CLASS_NAMES, "total"), rows) + ["", f"Source: {split_counts['source']}.", ""]
    if training:
        facts = {k: v for k, v in training.items() if k != "source"}
        lines += _table(("setting", "value"), [(k, v) for k, v in facts.items()])
        lines += ["", f"Source: {training['source']}.", ""]
    if not split_counts and not training:
        lines += ["Not given: no run record or manifest was at hand when this card was written.", ""]

    lines += ["## Metrics", ""]
    if metrics:
        lines += _metric_rows(metrics, digits) + [""]
        lines += ["Malignant (class 1) is the positive class; the predicted class is the larger logit "
                  "(malignant probability at least 0.5).", ""]
    else:
        lines += ["Not measured: no test predictions were at hand when this card was written.", ""]

    lines += ["## Calibration", ""]
    if calibration:
        lines += _metric_rows(calibration, digits) + [""]
        lines += ["ECE: expected calibration error of the malignant probability, 10 equal-width bins "
                  "(`kd_utils.stats.expected_calibration_error`); 0 is perfectly calibrated.", ""]
    else:
        lines += ["Not measured.", ""]

    lines += ["## Quantization", ""]
    if quantization is not None and len(quantization):
        lines += _quantization_lines(quantization, quantization_source or "not given", digits) + [""]
    else:
        lines += ["Not measured: no exported copy was compared with the Keras model.", ""]

    lines += ["## Intended use", "", INTENDED_USE, "", f"**Out of scope:** {OUT_OF_SCOPE}", ""]
    lines += ["## Limitations", ""]
    lines += [f"- {text}" for text in ((SYNTHETIC_LIMITATION,) if synthetic_data else ()) + LIMITATIONS] + [""]
    lines += ["## Not a diagnostic device", "", NOT_A_DEVICE, "", _disclaimer(), ""]
    return "\n".join(lines)


def write(folder, **card) -> Path:
    """:func:`render` ``card`` into ``<folder>/MODEL_CARD.md``; returns the path."""
    path = Path(folder) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(**card))
    return path


# --------------------------------------------------------------------------- export


def _run_record(run_dir: Path) -> dict | None:
    path = run_dir / "record.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _training_facts(config: dict, source: str) -> dict:
    labels = {"model": "run", "profile": "profile", "student": "student", "epochs": "epochs", "batch_size": "batch size",
              "learning_rate": "learning rate (Adam)", "seed": "seed", "temperature": "temperature T",
              "alpha": "alpha (weight of the hard-label loss)", "soft_loss": "soft loss", "weights": "initial weights"}
    facts = {label: config[key] for key, label in labels.items() if key in config}
    if "temperature" in config and config.get("temperature") is None:
        facts["temperature T"] = "none: trained without the teacher"
    data = config.get("data") or {}
    if data.get("root"):
        facts["data folder"] = data["root"]
    return {**{k: ("none" if v is None else v) for k, v in facts.items()}, "source": source}


def _test_metrics(labels: np.ndarray, logits: np.ndarray, source: str) -> tuple[list[dict], list[dict]]:
    from .. import evaluation, stats

    record = evaluation.metrics_from_predictions(evaluation.Predictions(labels, logits, 0.0))
    correct = (np.argmax(logits, axis=-1) == labels).astype(np.float64)
    acc, low, high = stats.bootstrap_interval(correct)
    rows = [metric("accuracy", acc, low=low, high=high, interval="95% bootstrap over test images", source=source)]
    for cls in CLASS_NAMES:
        if cls in record["auc"]:
            rows.append(metric(f"AUC ({cls})", record["auc"][cls], source=source))
    for cls in CLASS_NAMES:
        for key in ("precision", "recall", "f1"):
            rows.append(metric(f"{key} ({cls})", record["per_class"][cls][key], source=source))
    p_malignant = evaluation.softmax(logits)[:, 1]
    calibration = [metric("ECE (malignant probability, 10 bins)",
                          stats.expected_calibration_error(labels, p_malignant), source=source)]
    return rows, calibration


def write_for_export(model, keras_path, exported_paths, profile=None, manifest=None, comparison=None) -> Path:
    """The card of an exported model, next to the exported files.

    ``model``: the Keras model that was exported (counted for the Model
    section); ``keras_path``: its ``.keras`` file, whose folder may hold the
    run's ``record.json`` (training settings) and test predictions (metrics
    with a bootstrap interval, calibration); ``manifest``: the data the
    profile used (split counts); ``comparison``: the table of
    :func:`kd_utils.tools.deploy.compare_on_split`.
    """
    from ..reporting import PREDICTIONS_FILE

    keras_path = Path(keras_path)
    exported = [Path(p) for p in exported_paths]
    folder = exported[0].parent if exported else keras_path.parent
    facts = model_facts(model)
    run_dir = keras_path.parent
    record = _run_record(run_dir)
    training = _training_facts(record["config"], f"run record {run_dir / 'record.json'}") if record else None
    split_counts = None
    if manifest is not None:
        table = manifest.counts()
        split_counts = {"counts": {s: {c: int(table.loc[s, c]) for c in CLASS_NAMES} for s in table.index},
                        "source": f"the {manifest.source} manifest of profile "
                                  f"{getattr(profile, 'name', profile)} (kd_utils.data.Manifest.counts)"}
    metrics, calibration = [], []
    predictions = run_dir / PREDICTIONS_FILE
    if predictions.is_file():
        with np.load(predictions) as saved:
            metrics, calibration = _test_metrics(saved["labels"], saved["logits"].astype(np.float64),
                                                 f"test predictions {predictions}")
    formats = ", ".join(p.name for p in exported)
    return write(
        folder,
        name=f"{keras_path.stem} ({facts['name']}) and its exported copies",
        architecture=f"`{facts['name']}` from `{keras_path}`; exported as {formats or 'nothing yet'}.",
        input_description=f"RGB images {facts['image_size']}x{facts['image_size']}x3, pixel values 0-255 (the "
                          "model scales them itself); output 2 logits (benign, malignant), softmax gives the "
                          "malignant probability.",
        layers=facts["layers"], params=facts["params"], flops=facts["flops"],
        training=training, split_counts=split_counts, metrics=metrics, calibration=calibration,
        quantization=comparison, quantization_source="`python -m kd_utils export` on the test split "
                                                      "(kd_utils.tools.deploy.compare_on_split)",
        synthetic_data=manifest is not None and manifest.source == "synthetic",
    )
