"""FusedRMSprop: Keras' RMSprop, one kernel per variable, same results and checkpoints."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtha_tf.fused_rmsprop import FusedRMSprop


def _trained(optimizer, steps=5):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(32, 8)).astype("float32"), rng.normal(size=(32, 3)).astype("float32")
    for _ in range(steps):
        model.train_on_batch(x, y)
    return model


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9}, {"centered": True}, {"centered": True, "momentum": 0.5}])
def test_fused_rmsprop_trains_exactly_like_keras_rmsprop(options):
    arguments = dict(learning_rate=1e-2, rho=0.99, epsilon=1e-8, **options)
    keras_model = _trained(keras.optimizers.RMSprop(**arguments))
    fused_model = _trained(FusedRMSprop(**arguments))
    assert not np.allclose(
        keras_model.get_weights()[0], _trained(keras.optimizers.RMSprop(**arguments), 0).get_weights()[0]
    )
    for expected, actual in zip(keras_model.get_weights(), fused_model.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, atol=2e-6)
    for expected, actual in zip(keras_model.optimizer.variables, fused_model.optimizer.variables, strict=True):
        assert re.split("[/_]", expected.path)[-1] == re.split("[/_]", actual.path)[-1]  # same slots, same order
        _assert_same_state(actual.numpy(), expected.numpy())


def _assert_same_state(actual, expected):
    """Equal up to float32 rounding of the slot's largest values: a momentum slot sums increments of about
    lr / sqrt(1 - rho) = 0.1 that largely cancel, and the kernel's vectorised arithmetic rounds them differently from
    Keras' ops, by CPU (within 1e-7 on AVX2; on AVX-512, 1.8e-7 apart on an element of 5e-3 after five steps)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_checkpoints_hold_the_same_state_and_restore_across_optimizers(tmp_path):
    keras_model = _trained(keras.optimizers.RMSprop(1e-2))
    fused_model = _trained(FusedRMSprop(1e-2))
    written = {}
    for name, model in (("keras", keras_model), ("fused", fused_model)):
        path = tf.train.Checkpoint(optimizer=model.optimizer).write(str(tmp_path / name))
        written[name] = path, tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert written["keras"][1] == written["fused"][1]  # the scratch increments are not saved
    fresh = _trained(FusedRMSprop(1e-2), steps=1)
    tf.train.Checkpoint(optimizer=fresh.optimizer).read(written["keras"][0]).assert_existing_objects_matched()
    for expected, actual in zip(keras_model.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(actual.numpy(), expected.numpy())


def test_under_mixed_float16_it_runs_inside_keras_loss_scaling_and_still_matches_rmsprop():
    """What `train.py --mixed_precision` runs on a GPU: Keras wraps the optimizer in dynamic loss scaling."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras_model = _trained(keras.optimizers.RMSprop(1e-2))
        fused_model = _trained(FusedRMSprop(1e-2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert fused_model.layers[0].compute_dtype == "float16"
    assert isinstance(fused_model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(fused_model.optimizer.inner_optimizer, FusedRMSprop)
    untrained = _trained(keras.optimizers.RMSprop(1e-2), 0).get_weights()[0]
    assert not np.allclose(fused_model.get_weights()[0], untrained), "the steps were applied, not all skipped"
    for expected, actual in zip(keras_model.get_weights(), fused_model.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, atol=2e-6)
