"""Keras callbacks: held-out evaluation into the logs, TensorBoard summaries and prediction images, a NaN guard,
the epoch checkpoints, the per-epoch history (history.csv)."""

import csv
import math
import os

import keras
import numpy as np
import tensorflow as tf

from mtha_tf import atomic_files, evaluation, tasks, visualize
from mtha_tf.absl_logs import without_info_logs
from mtha_tf.targets import make_codecs


def non_finite_losses(logs):
    """The loss entries of a batch's or an epoch's logs that are NaN or infinite, sorted."""
    return sorted(k for k, v in (logs or {}).items() if "loss" in k and not math.isfinite(float(v)))


def flatten_metrics(results, prefix="val"):
    """{"pose2d": {"pckh": 80.1, ...}} -> {"val_pose2d_pckh": 80.1, ...}: scalars only."""
    flat = {}
    for task, values in results.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, int | float):
                flat[f"{prefix}_{task}_{key}"] = float(value)
    return flat


class EvaluationCallback(keras.callbacks.Callback):
    """At each epoch end: every metric of the trained tasks on held-out frames, as `val_*` entries in the logs, so
    ModelCheckpoint, TensorBoard and History see them."""

    def __init__(self, file_pattern, trained_tasks, batch_size, input_size, frame_stride=1, forward=None):
        super().__init__()
        self.file_pattern = file_pattern
        self.tasks = tasks.parse_tasks(trained_tasks)
        self.batch_size, self.input_size, self.frame_stride = batch_size, input_size, frame_stride
        self.last_results = None
        self.forward = forward

    def set_model(self, model):
        super().set_model(model)
        self.forward = self.forward or evaluation.forward_function(model)

    def on_epoch_end(self, epoch, logs=None):
        if non_finite_losses(logs):  # TerminateOnNaN stopped the epoch: the weights are not worth minutes of evaluation
            return
        self.last_results, _ = evaluation.evaluate(
            self.forward, self.file_pattern, self.tasks, self.batch_size, self.input_size, self.frame_stride
        )
        if logs is not None:
            logs.update(flatten_metrics(self.last_results))


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' callback, writing its epoch summaries (losses; held-out metrics, the `val_*` logs) at every epoch and
    numbering batch summaries by the optimizer's step count.

    Keras keeps its batch summaries' record_if(step % update_freq == 0) in force through fit() and writes the epoch
    ones under it, so an epoch whose last step is no multiple of update_freq logged nothing (the tiny preset's 3
    steps: every epoch; --steps_per_epoch=250 with update_freq 20: every other one; tensorflow/tensorflow#49109)."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # A resumed run's batch summaries go on from the restored step count (Keras counts from 0 in every fit(),
        # which drew the resumed run's losses over the first run's in TensorBoard).
        self._global_train_batch = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)


class PredictionImages(keras.callbacks.Callback):
    """At each epoch end writes, for a fixed held-out batch, the input with the predicted skeleton, parts and depth.
    `forward`: the model's `evaluation.forward_function`, the held-out evaluation's (one trace for both)."""

    def __init__(self, log_dir, batch, forward, every=1):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.images = batch
        self.forward = forward
        self.every = every
        self.codecs = make_codecs(batch.shape[1] // 4)

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every or non_finite_losses(logs):
            return
        rows = visualize.prediction_rows(self.images, self.forward(self.images), self.codecs)
        # Under fit(), Keras' TensorBoard callback keeps a record_if of its own in force (see TensorBoard above).
        with self.writer.as_default(), tf.summary.record_if(True):
            tf.summary.image("predictions", np.stack(rows), step=epoch, max_outputs=len(rows))
        self.writer.flush()


class TerminateOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and says which loss terms went bad and what usually helps."""

    def __init__(self):
        super().__init__()
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        if bad := non_finite_losses(logs):
            self.message = (
                f"training stopped at batch {batch}: non-finite loss in {', '.join(bad)}; the work dir keeps the "
                "checkpoint of the last finished epoch, not this one. Lower --learning_rate (in a new --workdir), "
                "check the data (python -m data_prep.surreal writes a manifest), or try without --mixed_precision."
            )
            print(f"\n{self.message}", flush=True)
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state and the epoch at every epoch end with tf.train.Checkpoint (written under a
    temporary name and committed atomically, so a SIGKILL at any moment leaves the last complete checkpoint). An epoch
    that TerminateOnNaN stopped is not saved: Keras ends the stopped epoch as any other, and its checkpoint of
    non-finite weights became the one a rerun resumed from."""

    def __init__(self, directory, model, max_to_keep=2):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        model.optimizer.build(model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)

    def restore(self):
        """Restores the latest checkpoint if any; returns the number of finished epochs."""
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        if non_finite_losses(logs):
            return
        self.epoch.assign(epoch + 1)
        with without_info_logs():
            self.manager.save(checkpoint_number=epoch + 1)


def history_logger(path, initial_epoch):
    """Keras' CSVLogger appending to `path`, which first keeps only the rows of the `initial_epoch` epochs the run
    resumes from. Logged before the epoch's checkpoint: an epoch logged but not saved (killed between the two, or
    stopped by a non-finite loss) is trained again and logged again, and its first row goes; history.csv had it twice,
    or, logged after the checkpoint, lacked an epoch killed between the two."""
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if rows and "epoch" in rows[0]:
            column = rows[0].index("epoch")
            kept = [row for row in rows[1:] if int(row[column]) < initial_epoch]
            if len(kept) < len(rows) - 1:
                with atomic_files.replacing(path) as partial, open(partial, "w", newline="") as f:
                    csv.writer(f).writerows([rows[0], *kept])
    return keras.callbacks.CSVLogger(path, append=True)
