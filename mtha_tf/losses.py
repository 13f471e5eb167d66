"""The paper's losses (eq. 1): RMSE for the pose heatmaps, spatial softmax cross-entropy for the label maps.

Pure functions of (targets, predictions) returning one value per example; `keras_losses` wraps them per model output
so that Keras sums every task and every stack (intermediate supervision uses the same target) with task weights.
"""

import keras
import tensorflow as tf

from mtha_tf import tasks as task_table
from mtha_tf.model import output_name


def heatmap_rmse(targets, predictions):
    """Root of the mean squared error over each example's heatmap or volume: [B, H, W, C] -> [B]."""
    predictions = tf.cast(predictions, tf.float32)
    squared = tf.square(tf.cast(targets, tf.float32) - predictions)
    return tf.sqrt(tf.reduce_mean(squared, axis=[1, 2, 3]) + 1e-12)


def spatial_cross_entropy(labels, logits, background_weight=1.0):
    """Softmax cross-entropy over classes, averaged over pixels: labels int [B, H, W], logits [B, H, W, C] -> [B].

    `background_weight` scales the loss of background (class 0) pixels; 1 is the paper's loss.
    """
    labels = tf.cast(labels, tf.int32)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
    if background_weight != 1.0:
        per_pixel *= tf.where(labels == 0, background_weight, 1.0)
    return tf.reduce_mean(per_pixel, axis=[1, 2])


class HeatmapRMSE(keras.losses.Loss):
    """Keras wrapper of `heatmap_rmse`."""

    def call(self, y_true, y_pred):
        return heatmap_rmse(y_true, y_pred)


class SpatialCrossEntropy(keras.losses.Loss):
    """Keras wrapper of `spatial_cross_entropy`."""

    def __init__(self, background_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.background_weight = background_weight

    def call(self, y_true, y_pred):
        return spatial_cross_entropy(y_true, y_pred, self.background_weight)


KERAS_LOSSES = {
    task: SpatialCrossEntropy if task in task_table.LABEL_MAP_TASKS else HeatmapRMSE for task in task_table.TASKS
}


def keras_losses(tasks, num_stacks, task_weights=None, depth_background_weight=1.0):
    """(losses, loss_weights) dicts keyed by model output name, for `model.compile`."""
    weights = task_weights or {}
    losses, loss_weights = {}, {}
    for task in task_table.parse_tasks(tasks):
        for stack in range(num_stacks):
            name = output_name(task, stack, num_stacks)
            options = {"background_weight": depth_background_weight} if task == "depth" else {}
            losses[name] = KERAS_LOSSES[task](name=f"{name}_loss", **options)
            loss_weights[name] = float(weights.get(task, 1.0))
    return losses, loss_weights


def targets_per_output(tasks, num_stacks):
    """A tf.data map giving every stack's output its task's target (the same tensor, not a copy)."""
    task_names = task_table.parse_tasks(tasks)

    def expand(inputs, targets):
        per_output = {
            output_name(task, stack, num_stacks): targets[task] for task in task_names for stack in range(num_stacks)
        }
        return inputs, per_output

    return expand
