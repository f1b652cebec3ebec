"""Floating-point operations per image of a Keras model, counted two ways.

**FLOPs**, as counted here, are floating-point additions and multiplications
per image (batch 1), a multiply-accumulate counting 2:

* Conv2D: ``2 * H_out * W_out * C_out * k_h * k_w * C_in / groups``;
  DepthwiseConv2D: ``2 * H_out * W_out * C_in * multiplier * k_h * k_w``;
  SeparableConv2D: its depthwise plus its 1x1 pointwise part;
  Dense: ``2 * inputs * units``; plus one per output element for a bias;
* BatchNormalization (inference): 2 per element (scale and shift);
* max / average pooling: one per window element and output element; global
  average pooling: one per input element;
* Add / Subtract / Multiply layers: one per output element and extra input;
* the input scaling (``Preprocess``, ``Rescaling``, ``Normalization``): one
  per element and arithmetic step;
* activations: 0, except swish (``x * sigmoid(x)``: 1 per element for the
  multiply); comparisons (ReLU), transcendental functions (sigmoid) and data
  movement (padding, reshapes, dropout at inference) are not counted.

The "conv/dense" part (2 x multiply-accumulates of convolutions and dense
layers, 99 % and more of the total for these networks) is what papers usually
quote as FLOPs. TensorFlow's profiler (``tf.compat.v1.profiler``, ``float_ops``
on the frozen inference graph) uses the same conventions for these ops, so
the conv/dense parts must agree exactly; the totals differ only by the
per-channel batch-norm constants TensorFlow recomputes on every call and
similar small terms (:data:`TOTAL_TOLERANCE`).
"""

from __future__ import annotations

import numpy as np

#: Relative difference allowed between the analytic and the profiler totals.
TOTAL_TOLERANCE = 0.01
#: Profiler op types that make up the conv/dense part.
CONV_DENSE_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def _elements(shape) -> int:
    """Elements per image of a layer tensor shape (batch dimension dropped)."""
    return int(np.prod([int(d) for d in tuple(shape)[1:]]))


def _layer_flops(layer) -> tuple[int, int]:
    """``(conv_dense, other)`` FLOPs of one (non-nested) layer per image."""
    from keras import layers

    from ..models import Preprocess

    name = type(layer).__name__
    out_shape = tuple(layer.output.shape)
    out = _elements(out_shape)
    bias = out if getattr(layer, "use_bias", False) else 0
    extra = out if getattr(getattr(layer, "activation", None), "__name__", "") in ("swish", "silu") else 0
    if isinstance(layer, layers.SeparableConv2D):
        c_in = int(layer.input.shape[-1])
        kh, kw = layer.kernel_size
        spatial = out // int(out_shape[-1])
        depthwise = spatial * c_in * layer.depth_multiplier * kh * kw
        pointwise = spatial * c_in * layer.depth_multiplier * int(out_shape[-1])
        return 2 * (depthwise + pointwise), bias + extra
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * out * kh * kw, bias + extra
    if isinstance(layer, layers.Conv2D):
        c_in = int(layer.input.shape[-1])
        kh, kw = layer.kernel_size
        return 2 * out * kh * kw * c_in // layer.groups, bias + extra
    if isinstance(layer, layers.Dense):
        return 2 * out * int(layer.input.shape[-1]), bias + extra
    if isinstance(layer, layers.BatchNormalization):
        return 0, 2 * out
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        ph, pw = layer.pool_size
        return 0, out * ph * pw
    if isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
        return 0, _elements(layer.input.shape)
    if isinstance(layer, (layers.Add, layers.Subtract, layers.Multiply)):
        return 0, out * (len(layer.input) - 1)
    if isinstance(layer, Preprocess):
        return 0, out * {"unit": 1, "tf": 2, "caffe": 1, "none": 0}[layer.mode]
    if isinstance(layer, layers.Rescaling):
        return 0, out * (2 if np.any(np.asarray(layer.offset) != 0) else 1)
    if isinstance(layer, layers.Normalization):
        return 0, 2 * out
    if isinstance(layer, layers.Activation):
        return 0, extra
    free = (layers.InputLayer, layers.Flatten, layers.Reshape, layers.Dropout, layers.SpatialDropout2D,
            layers.ZeroPadding2D, layers.Cropping2D, layers.ReLU, layers.Permute, layers.Concatenate)
    if isinstance(layer, free):
        return 0, 0
    raise ValueError(f"No FLOP rule for layer {layer.name!r} of type {name}; add one to kd_utils.tools.benchmark.")


def flops_by_layer(model):
    """A DataFrame of per-image FLOPs per layer (nested models flattened)."""
    import keras
    import pandas as pd

    rows = []

    def walk(m, prefix=""):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer, f"{prefix}{layer.name}/")
                continue
            conv_dense, other = _layer_flops(layer)
            rows.append({"layer": prefix + layer.name, "type": type(layer).__name__,
                         "output_shape": tuple(layer.output.shape)[1:],
                         "conv_dense": conv_dense, "other": other, "total": conv_dense + other})

    walk(model)
    return pd.DataFrame(rows)


def analytic_flops(model) -> dict[str, int]:
    """Per-image FLOPs by the rules of the module docstring: ``total`` and ``conv_dense``."""
    table = flops_by_layer(model)
    return {"total": int(table.total.sum()), "conv_dense": int(table.conv_dense.sum())}


def profiler_flops(model) -> dict:
    """TensorFlow's own count: ``float_ops`` of the frozen batch-1 inference graph.

    Returns ``total``, ``conv_dense`` (the :data:`CONV_DENSE_OPS` op types) and
    ``by_op`` (float ops per op type).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    size = tuple(model.input_shape)[1:]
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, *size), tf.float32)
    )
    graph = convert_variables_to_constants_v2(function).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the v1 profiler warns about its own deprecated internals
    try:
        root = tf.compat.v1.profiler.profile(
            graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    finally:
        logger.setLevel(level)
    by_op, node = {}, root
    while node.children:  # the "op" view is a chain, one node per op type
        node = node.children[0]
        by_op[node.name] = int(node.float_ops)
    conv_dense = sum(v for k, v in by_op.items() if k in CONV_DENSE_OPS)
    return {"total": int(root.total_float_ops), "conv_dense": int(conv_dense), "by_op": by_op}
