"""Keras' RMSprop with each variable updated by one TensorFlow kernel.

Keras 3 updates every variable with about ten separate ops (cast, square, multiply, add, assign, sqrt, divide,
assign_sub, ...), each created through Keras' op layer and TensorFlow's distribution `update` path. The multi-task
model has ~800 trainable variables even at test sizes, so tracing the optimizer took half of the training step's
trace time (15 of 35 s on a tiny 2-stack model), and the step makes ten passes over the optimizer state where one
does. `ResourceApplyRMSProp` (and its centred variant) is the same update in one kernel:

    ms  <- rho * ms + (1 - rho) * g^2
    mom <- momentum * mom + lr * g / sqrt(ms + epsilon)        (Keras also puts epsilon inside the square root)
    var <- var - mom

With momentum 0 (the paper's RMSprop, and Keras' default) Keras keeps no momentum slot; the kernel still writes one,
so each variable gets a scratch buffer that holds only the current step's increment: state-free, kept out of
checkpoints, which therefore stay exactly Keras' RMSprop's (either optimizer restores the other's).
"""

import keras
import tensorflow as tf


def _tf_variable(variable):
    """The tf.Variable under a Keras variable (the kernels take resource handles)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="mtha_tf")
class FusedRMSprop(keras.optimizers.RMSprop):
    """`keras.optimizers.RMSprop` (same arguments, variables and results) with fused per-variable updates."""

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        if self.momentum > 0:
            return
        # Created like the slots (mirrored under a distribution strategy, next to their variable) but held out of
        # Keras' and TensorFlow's attribute tracking, hence out of checkpoints and `self.variables`.
        scratch = []
        for variable in var_list:
            with self._distribution_strategy.extended.colocate_vars_with(_tf_variable(variable)):
                scratch.append(tf.Variable(tf.zeros(variable.shape, variable.dtype), trainable=False))
        object.__setattr__(self, "_increments", scratch)

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):  # sparse gradients (embeddings): Keras' dense-op update
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        variable = _tf_variable(variable)
        momentum = _tf_variable(self._momentums[index] if self.momentum > 0 else self._increments[index])
        dtype = variable.dtype
        arguments = dict(
            var=variable.handle,
            ms=_tf_variable(self._velocities[index]).handle,
            mom=momentum.handle,
            lr=tf.cast(learning_rate, dtype),
            rho=tf.cast(self.rho, dtype),
            momentum=tf.cast(self.momentum, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
            use_locking=False,
        )
        if self.centered:
            tf.raw_ops.ResourceApplyCenteredRMSProp(mg=_tf_variable(self._average_gradients[index]).handle, **arguments)
        else:
            tf.raw_ops.ResourceApplyRMSProp(**arguments)
