"""Folds inference-mode batch norms into the convolutions they follow, for the exported forward pass.

At inference a BatchNormalization is a per-channel affine map, y = s * (x - mean) + beta with s = gamma /
sqrt(variance + epsilon). Where x is a convolution's output used by nothing else, the map goes into the convolution's
kernel (times s, per output channel) and bias ((bias - mean) * s + beta), and the norm disappears from the graph.
In Newell's pre-activation residual (BN-ReLU-conv three times) that removes two of every three norms, and the norm of
each conv-BN-ReLU block; the first norm of a residual follows an addition (or the stem's pool) and stays.
"""

import keras
import numpy as np


def foldable_pairs(model):
    """{batch norm layer name: the Conv2D whose only consumer it is} for the model's inference-mode norms.

    Keras 3 exposes a functional model's graph only through its layers' nodes (`_inbound_nodes`, `_outbound_nodes`)
    and the tensors' `_keras_history`.
    """
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        producer = layer.input._keras_history.operation
        single_use = len(producer._outbound_nodes) == 1 and len(producer._inbound_nodes) == 1
        if isinstance(producer, keras.layers.Conv2D) and producer.data_format == "channels_last" and single_use:
            pairs[layer.name] = producer
    return pairs


def _float64(variable):
    return np.asarray(variable.numpy(), np.float64)


def _folded_conv_weights(conv, norm):
    """The kernel and bias of conv followed by norm (inference mode), computed in float64."""
    kernel = _float64(conv.kernel)
    bias = _float64(conv.bias) if conv.use_bias else 0.0
    gamma = _float64(norm.gamma) if norm.scale else 1.0
    beta = _float64(norm.beta) if norm.center else 0.0
    scale = gamma / np.sqrt(_float64(norm.moving_variance) + norm.epsilon)
    folded_bias = (bias - _float64(norm.moving_mean)) * scale + beta
    return [(kernel * scale).astype(np.float32), folded_bias.astype(np.float32)]


def fold_batch_norms(model):
    """A new functional model computing `model(x, training=False)` with the foldable norms folded away.

    Same inputs, outputs and layer names (minus the folded norms); the weights are copies, so later training of
    `model` does not reach the folded one.
    """
    pairs = foldable_pairs(model)
    folded_convs = {conv.name: norm_name for norm_name, conv in pairs.items()}

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in folded_convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call_layer(layer, *args, **kwargs):
        if layer.name in pairs:  # the folded norm: its input already carries the affine map
            return args[0]
        return layer(*args, **kwargs)

    # A plain functional view of the same layers: cloning a compiled model would also rebuild its losses and optimizer.
    inference_view = keras.Model(model.input, model.output, name=model.name)
    folded = keras.models.clone_model(inference_view, clone_function=clone_layer, call_function=call_layer)
    for layer in folded.layers:
        if not layer.weights:
            continue
        original = model.get_layer(layer.name)
        if layer.name in folded_convs:
            layer.set_weights(_folded_conv_weights(original, model.get_layer(folded_convs[layer.name])))
        else:
            layer.set_weights(original.get_weights())
    return folded
