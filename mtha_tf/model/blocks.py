"""Newell's building blocks as functions on Keras tensors; each takes a `name` prefix for its layers."""

import tensorflow as tf
from keras import layers

from mtha_tf.model.fused_batch_norm import FusedBatchNormalization


def batch_norm(name):
    """Torch's SpatialBatchNormalization as Newell's code uses it: eps 1e-5, running-average momentum 0.1 (Keras'
    momentum 0.9; Keras' default 0.99 lags the weights by ~100 steps and skews evaluation early in training).

    Built under a strategy with several replicas, the batch statistics are all-reduced (the paper's batch of 5 split
    over GPUs would otherwise normalise over 1-2 images) and every worker keeps the same moving averages.
    Otherwise one fused kernel computes it (fused_batch_norm.py: faster, less memory).
    """
    synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return FusedBatchNormalization(epsilon=1e-5, momentum=0.9, synchronized=synchronized, name=name)


def apply_conv_bn_relu(x, filters, kernel_size, name, strides=1):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def apply_residual(x, filters, name):
    """Pre-activation bottleneck (BN-ReLU-conv1x1 to filters/2, 3x3, 1x1 to filters) plus a 1x1 skip if needed."""
    in_filters = x.shape[-1]
    y = x
    for i, (width, kernel) in enumerate(((filters // 2, 1), (filters // 2, 3), (filters, 1))):
        y = batch_norm(f"{name}_bn{i}")(y)
        y = layers.ReLU(name=f"{name}_relu{i}")(y)
        y = layers.Conv2D(width, kernel, padding="same", name=f"{name}_conv{i}")(y)
    skip = x if in_filters == filters else layers.Conv2D(filters, 1, name=f"{name}_skip")(x)
    return layers.Add(name=f"{name}_add")([y, skip])


def apply_hourglass(x, depth, filters, name):
    """Recursive hourglass: an upper residual branch plus pool -> residuals (recursing) -> nearest 2x upsample."""
    upper = apply_residual(x, filters, f"{name}_up")
    lower = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    lower = apply_residual(lower, filters, f"{name}_low1")
    if depth > 1:
        lower = apply_hourglass(lower, depth - 1, filters, f"{name}_inner")
    else:
        lower = apply_residual(lower, filters, f"{name}_bottom")
    lower = apply_residual(lower, filters, f"{name}_low3")
    lower = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(lower)
    return layers.Add(name=f"{name}_add")([upper, lower])


def apply_stem(x, features, name="stem"):
    """7x7/2 conv (Torch's symmetric 3-pixel padding), residuals and a 2x2 pool: input/4 resolution."""
    x = layers.ZeroPadding2D(3, name=f"{name}_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    x = apply_residual(x, 128, f"{name}_res1")
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = apply_residual(x, 128, f"{name}_res2")
    return apply_residual(x, features, f"{name}_res3")
