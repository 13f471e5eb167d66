"""Batch-norm folding for the export: the folded network computes what the trained one does in inference mode."""

import keras
import numpy as np
from keras import layers

from export.fold_batch_norm import fold_batch_norms, foldable_pairs
from mtha_tf.config import make_config
from mtha_tf.trainer import compile_model


def _randomise_norms(model, seed=1):
    """Statistics and affine parameters far from their initial values, so a wrong fold shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.3, shape))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.normal(0, 0.3, shape))


def _norms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_folded_network_matches_the_trained_one_with_one_norm_per_residual_left():
    # As training leaves it: compiled with the project's losses and optimizer.
    model = compile_model(make_config("tiny", tasks="pose2d,depth", num_stacks=2, hourglass_depth=2))
    _randomise_norms(model)
    folded = fold_batch_norms(model)

    images = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype("float32")
    expected, actual = model({"image": images}, training=False), folded({"image": images}, training=False)
    assert sorted(actual) == sorted(expected)
    for name in expected:
        scale = float(np.abs(expected[name]).max())
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5 * scale, err_msg=name)
    # What stays is each residual's first norm (after an addition, a pool or the fusion's concatenation).
    residuals = {layer.name.rsplit("_", 1)[0] for layer in model.layers if layer.name.endswith("_conv2")}
    left = _norms(folded)
    assert len(left) == len(residuals) and all(norm.name.endswith("_bn0") for norm in left)
    assert len(_norms(model)) == len(left) + len(foldable_pairs(model))


def test_a_convolution_with_another_consumer_keeps_its_norm():
    inputs = keras.Input((8, 8, 3))
    conv = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    normed = layers.BatchNormalization(name="bn")(conv)
    shared = layers.Add(name="add")([normed, conv])  # conv's raw output is needed too
    other = layers.BatchNormalization(name="bn_other")(layers.Conv2D(4, 1, use_bias=False, name="conv_other")(shared))
    model = keras.Model(inputs, other)
    _randomise_norms(model)

    assert set(foldable_pairs(model)) == {"bn_other"}
    folded = fold_batch_norms(model)
    assert [norm.name for norm in _norms(folded)] == ["bn"] and folded.get_layer("conv_other").use_bias
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(folded(x), model(x, training=False), atol=1e-5)
