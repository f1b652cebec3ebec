"""MODEL_CARD.md: sections, numbers formatted from the given inputs, the disclaimer, the export hook."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from kd_utils import config, data, models, paths, stats
from kd_utils.tools import deploy, flops, model_card

SECTIONS = ["## Model", "## Training data and split", "## Metrics", "## Calibration", "## Quantization",
            "## Intended use", "## Limitations", "## Not a diagnostic device"]


def full_card(**changes):
    card = dict(
        name="DSNet (test)",
        architecture="Conv2D(128) - MaxPool - Conv2D(64) - MaxPool - Conv2D(32) - Dropout - Flatten - Dense(2)",
        params={"trainable": 110242, "source": "notebook 03"},
        flops={"total": 2206962754, "conv_dense": 2192602112, "image_size": 224, "source": "benchmark.md"},
        training={"temperature T": 50, "alpha": 0.1, "source": "kd_utils/config.py"},
        split_counts={"counts": {"train": {"benign": 562, "malignant": 561}, "test": {"benign": 298, "malignant": 299}},
                      "source": "notebook 01"},
        metrics=[model_card.metric("accuracy", 0.8257956, sd=0.0117253, n=3, source="table2.csv"),
                 model_card.metric("KD gain", 0.0061418, low=-0.0089475, high=0.0212172,
                                   interval="95% paired bootstrap", source="table2.csv")],
        calibration=[model_card.metric("ECE", 0.0850819, sd=0.0234687, n=3, source="calibration.csv")],
        quantization=pd.DataFrame({"model": ["best.keras", "best_int8.tflite"], "format": ["keras", "tflite"],
                                   "size_mb": [0.4784, 0.1211], "accuracy": [0.8392, 0.8375],
                                   "accuracy_loss": [0.0, 0.0017], "agreement": [1.0, 0.9983]}),
        quantization_source="export_tflite.txt",
        generated="2026-01-01",
    )
    card.update(changes)
    return model_card.render(**card)


def section(text, heading):
    start = text.index(heading + "\n")
    following = [text.index(h + "\n") for h in SECTIONS if text.index(h + "\n") > start]
    return text[start:min(following) if following else len(text)]


def test_every_section_in_order_with_the_disclaimer_first_and_last():
    text = full_card()
    positions = [text.index(h + "\n") for h in SECTIONS]
    assert positions == sorted(positions)
    assert text.startswith(f"# Model card: DSNet (test)\n\n> **{deploy.DISCLAIMER}**\n")
    assert section(text, "## Not a diagnostic device").count(deploy.DISCLAIMER) == 1
    assert "not a medical device" in section(text, "## Not a diagnostic device")
    assert "**Out of scope:** any clinical use" in section(text, "## Intended use")


def test_numbers_are_formatted_from_the_inputs_with_their_sources():
    text = full_card()
    model = section(text, "## Model")
    assert "Parameters: 110,242 trainable. Source: notebook 03." in model
    assert "FLOPs per image at 224x224: 2,206,962,754 (2,192,602,112 in convolutions and dense layers)" in model
    split = section(text, "## Training data and split")
    assert "| train | 562 | 561 | 1,123 |" in split and "| test | 298 | 299 | 597 |" in split
    assert "| temperature T | 50 |" in split and "Source: notebook 01." in split
    metrics = section(text, "## Metrics")
    assert "| accuracy | 0.826 ± 0.012 (n=3) |  | table2.csv |" in metrics
    assert "| KD gain | 0.006 | [-0.009, 0.021] 95% paired bootstrap | table2.csv |" in metrics
    assert "| ECE | 0.085 ± 0.023 (n=3) |" in section(text, "## Calibration")
    quant = section(text, "## Quantization")
    assert "| best_int8.tflite | tflite | 0.12 | 0.8375 | 0.0017 | 0.9983 |" in quant
    assert "Largest accuracy loss against the Keras model: 0.0017 (best_int8.tflite)." in quant
    assert "Source: export_tflite.txt." in quant


def test_missing_inputs_are_said_to_be_missing_not_made_up():
    text = model_card.render(name="bare", architecture="a model", generated="2026-01-01")
    assert "Not given: no run record" in section(text, "## Training data and split")
    assert "Not measured" in section(text, "## Metrics")
    assert "Not measured" in section(text, "## Calibration")
    assert "Not measured" in section(text, "## Quantization")
    assert "Parameters" not in text and "FLOPs" not in text
    assert not re.search(r"\d\.\d{3}", text)
    assert "synthetic" not in section(text, "## Limitations")
    assert "**synthetic**" in section(full_card(synthetic_data=True), "## Limitations")


def test_metric_rows_refuse_what_would_mislead():
    with pytest.raises(ValueError, match="source"):
        model_card.metric("accuracy", 0.8, source="")
    with pytest.raises(ValueError, match="outside its interval"):
        model_card.metric("accuracy", 0.8, low=0.81, high=0.9, source="x")
    with pytest.raises(ValueError, match="both ends"):
        model_card.metric("accuracy", 0.8, low=0.7, source="x")
    with pytest.raises(ValueError, match="finite"):
        model_card.metric("accuracy", float("nan"), source="x")
    assert model_card.metric("ECE", 0.2, sd=float("nan"), n=1, source="x")["sd"] is None


def test_model_facts_reuse_the_parameter_and_flop_counters():
    model = models.build_dsnet(75)
    facts = model_card.model_facts(model)
    assert facts["image_size"] == 75
    assert facts["params"]["trainable"] == models.count_params(model)["trainable"] == 110242
    assert facts["flops"]["total"] == flops.analytic_flops(model)["total"]
    assert [layer["name"] for layer in facts["layers"]][-1] == "logits"
    assert sum(layer["params"] for layer in facts["layers"]) == 110242


def test_export_writes_a_card_next_to_the_exported_model(tmp_path, capsys):
    from kd_utils.__main__ import main

    size = 32
    profile = config.get_profile("smoke")
    manifest = data.build_manifest("synthetic", tmp_path / "syn", image_size=size, synthetic_per_class=12,
                                   work_dir=tmp_path / "converted")
    manifest.save(paths.artifacts_dir(profile) / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = models.build_dsnet(size)
    model.save(run_dir / "best.keras")
    (run_dir / "record.json").write_text(json.dumps(
        {"config": {"model": "DSNet distilled", "student": "DSNet", "epochs": 1, "batch_size": 32, "seed": 10,
                    "temperature": 10.0, "alpha": 0.1, "data": manifest.info}}))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    logits = rng.normal(size=(40, 2)) + np.stack([1 - labels, labels], axis=1)
    np.savez(run_dir / "test_predictions.npz", labels=labels, logits=logits)

    assert main(["export", str(run_dir / "best.keras"), "--quantize", "none", "--profile", "smoke",
                 "--out", str(tmp_path / "out")]) == 0
    card_path = tmp_path / "out" / "MODEL_CARD.md"
    assert f"wrote {card_path}" in capsys.readouterr().out
    text = card_path.read_text()
    assert all(h in text for h in SECTIONS) and deploy.DISCLAIMER in text
    n = models.count_params(model)["trainable"]
    assert f"Parameters: {n:,} in total, {n:,} trainable, 0 non-trainable." in text
    assert f"FLOPs per image at 32x32: {flops.analytic_flops(model)['total']:,}" in text
    counts = manifest.counts()
    assert f"| test | {counts.loc['test', 'benign']} | {counts.loc['test', 'malignant']} |" in text
    assert "| temperature T | 10.0 |" in text and "| seed | 10 |" in text
    acc, low, high = stats.bootstrap_interval((logits.argmax(1) == labels).astype(float))
    assert f"| accuracy | {acc:.3f} | [{low:.3f}, {high:.3f}] 95% bootstrap over test images |" in text
    ece = stats.expected_calibration_error(labels, np.exp(logits[:, 1]) / np.exp(logits).sum(1))
    assert f"| ECE (malignant probability, 10 bins) | {ece:.3f} |" in text
    assert "| best_float32.tflite | tflite |" in text and "**synthetic**" in text
