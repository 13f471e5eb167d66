"""Run by test_distributed.py in a process of its own: two logical CPUs stand in for two GPUs under MirroredStrategy.

The logical devices must be set before TensorFlow starts its runtime, hence the separate process; the strategy's
code path is the multi-GPU one (per-replica batches, synchronised batch norms, all-reduced gradients) with CPU
all-reduces in place of NCCL. Prints one JSON object of findings for the test to assert on.

    python -m tests.two_replicas WORKDIR
"""

import json
import sys

import tensorflow as tf

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mtha_tf import config as config_lib  # noqa: E402
from mtha_tf import losses, trainer  # noqa: E402
from mtha_tf.model import build_model_for  # noqa: E402
from tests.conftest import random_batch  # noqa: E402

TASKS = "pose2d,depth"


def one_sgd_step(config, strategy, initial_weights):
    """One plain gradient step (SGD, learning rate 1: the update is the gradient) on a fixed batch -> the model.

    Eager: one step does not pay for tracing two replicas' graphs (~30 s at these sizes)."""
    inputs, targets = random_batch(config.task_names(), config.input_size, batch=config.batch_size, seed=3)
    dataset = tf.data.Dataset.from_tensors((inputs, targets)).repeat()
    dataset = dataset.map(losses.targets_per_output(config.task_names(), config.num_stacks))
    with strategy.scope():
        keras.utils.set_random_seed(config.seed)
        model = build_model_for(config)
        loss, loss_weights = losses.keras_losses(config.task_names(), config.num_stacks)
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, loss_weights=loss_weights, run_eagerly=True)
    model.set_weights(initial_weights)
    trainer.build_before_fit(model, strategy, dataset)
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    return model


def relative_update_errors(config, strategy):
    """{variable path: |two-replica update - one-device update| / |one-device update|} (Frobenius norms).

    Left out: variables whose gradient is zero but for rounding (convolution biases in front of a batch norm).
    """
    one_device = tf.distribute.get_strategy()
    initial = [w.numpy() for w in build_model_for(config).weights]
    reference = one_sgd_step(config, one_device, initial)
    replicated = one_sgd_step(config, strategy, initial)
    changes = [one.numpy() - before for one, before in zip(reference.weights, initial, strict=True)]
    largest = max(np.linalg.norm(change) for change in changes)
    errors = {}
    for one, two, before, change in zip(reference.weights, replicated.weights, initial, changes, strict=True):
        if np.linalg.norm(change) > 1e-6 * largest:
            errors[one.path] = float(np.linalg.norm(two.numpy() - before - change) / np.linalg.norm(change))
    return errors


def main(workdir):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = config_lib.make_config("tiny", tasks=TASKS, batch_size=4)
    findings = {"replicas": strategy.num_replicas_in_sync, "errors": relative_update_errors(config, strategy)}

    trainer.make_strategy = lambda: strategy  # what train() picks on a machine with two GPUs
    try:
        trainer.train(config_lib.make_config("tiny", tasks=TASKS, batch_size=5), f"{workdir}/uneven")
    except trainer.TrainingFailed as error:
        findings["uneven_batch"] = str(error)
    run = config_lib.make_config("tiny", tasks="depth", epochs=1, steps_per_epoch=2)
    findings["trained"] = trainer.train(run, f"{workdir}/run", verbose=0)["trained"]
    print(json.dumps(findings))


if __name__ == "__main__":
    main(sys.argv[1])
