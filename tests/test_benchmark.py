"""FLOP counting (analytic vs TensorFlow's profiler) and the benchmark command's outputs.

Timings are printed by the command only; nothing here asserts a performance number.
"""

import keras
import pandas as pd
import pytest
from PIL import Image

from kd_utils import models
from kd_utils.tools import benchmark, flops
from kd_utils.__main__ import main


def dsnet_flops_by_hand(size: int = 224) -> dict[str, int]:
    """DSNet's FLOPs from its layer shapes: valid 3x3 convolutions (a multiply-accumulate = 2
    FLOPs, one bias add per output), 2x2 max pools (4 per output), Dense(2), input / 255."""
    c1 = size - 2                # conv1: 3 -> 128 channels
    p1 = c1 // 2                 # pool1
    c2 = p1 - 2                  # conv2: 128 -> 64
    p2 = c2 // 2                 # pool2
    c3 = p2 - 2                  # conv3: 64 -> 32
    flat = c3 * c3 * 32
    conv_dense = (
        2 * c1 * c1 * 128 * (3 * 3 * 3)
        + 2 * c2 * c2 * 64 * (3 * 3 * 128)
        + 2 * c3 * c3 * 32 * (3 * 3 * 64)
        + 2 * flat * 2
    )
    biases = c1 * c1 * 128 + c2 * c2 * 64 + c3 * c3 * 32 + 2
    pools = 4 * (p1 * p1 * 128) + 4 * (p2 * p2 * 64)
    preprocess = size * size * 3
    return {"total": conv_dense + biases + pools + preprocess, "conv_dense": conv_dense}


def test_dsnet_flops_at_224_match_the_formula_and_tensorflow():
    model = models.build_dsnet(224)
    expected = dsnet_flops_by_hand(224)
    assert expected["conv_dense"] == 2 * 1_096_301_056  # 1.10 G multiply-accumulates
    assert flops.analytic_flops(model) == expected
    profiled = flops.profiler_flops(model)
    assert profiled["conv_dense"] == expected["conv_dense"]
    assert abs(profiled["total"] - expected["total"]) <= flops.TOTAL_TOLERANCE * profiled["total"]
    table = flops.flops_by_layer(model).set_index("layer")
    assert table.loc["conv2", "conv_dense"] == 2 * 109 * 109 * 64 * 3 * 3 * 128


@pytest.mark.parametrize("name", ["MobileNet", "EfficientNetB0"])
def test_analytic_flops_agree_with_tensorflow_for_the_other_students(name):
    """Depthwise convolutions, swish, squeeze-excitation, batch norm: conv/dense exactly, totals
    within the stated tolerance."""
    model = models.build_student(name, 224, weights=None)
    analytic, profiled = flops.analytic_flops(model), flops.profiler_flops(model)
    assert analytic["conv_dense"] == profiled["conv_dense"]
    assert abs(analytic["total"] - profiled["total"]) <= flops.TOTAL_TOLERANCE * profiled["total"]


def test_a_layer_without_a_flop_rule_is_an_error():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2DTranspose(4, 3)(inputs))
    with pytest.raises(ValueError, match="No FLOP rule.*Conv2DTranspose"):
        flops.analytic_flops(model)


@pytest.mark.slow
def test_quick_benchmark_writes_the_report(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "benchmark.csv")
    assert list(table.columns) == list(benchmark.OUT_COLUMNS)
    assert list(table.model) == list(benchmark.ROW_ORDER)
    assert table.notna().all().all()
    reference = table.set_index("model").loc[benchmark.REFERENCE]
    assert reference.params_ratio == 1 and reference.latency_ratio == 1
    dsnet_rows = table[table.model.str.startswith("DSNet")]
    assert (dsnet_rows.params == reference.params).all()  # one network, four formats
    assert (table.gflops_conv_dense == table.gflops_tf_conv_dense).all()
    md = (out / "benchmark.md").read_text()
    assert "Machine:" in md and "TensorFlow" in md and "logical cores" in md
    assert all(name in md for name in benchmark.ROW_ORDER)
    assert "Distiller epoch, precomputed teacher logits" in md and "Input pipeline" in md
    training = pd.read_csv(out / "benchmark_training.csv").set_index("measurement").value
    assert {"epoch_s_live_teacher", "epoch_s_precomputed_logits", "pipeline_ips_decode"} <= set(training.index)
    with Image.open(out / "benchmark.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert "| Teacher ResNet50 |" in printed
