"""The multi-task, multi-stream Stacked Hourglass (Sanchez et al. 2019, section II.A, on Newell et al. 2016)."""

import keras
from keras import layers

from mtha_tf import tasks as task_table
from mtha_tf.model.blocks import apply_conv_bn_relu, apply_hourglass, apply_residual, apply_stem


def output_name(task, stack, num_stacks):
    """The last stack's output is keyed by the task name; earlier stacks (intermediate supervision) by task_stackN."""
    return task if stack == num_stacks - 1 else f"{task}_stack{stack + 1}"


def build_model_for(config):
    """The network a `mtha_tf.config.Config` describes (training, evaluation and tests build it from one)."""
    return build_model(config.task_names(), config.num_stacks, config.features, config.input_size,
                       config.hourglass_depth)  # fmt: skip


def build_model(tasks, num_stacks=2, features=256, input_size=256, hourglass_depth=4, name="mtha"):
    """A functional Keras model: shared stem, one hourglass stream per task, outputs keyed by task (and stack).

    Per stack and stream: hourglass -> residual -> 1x1 conv + BN + ReLU -> 1x1 prediction head. Between stacks each
    stream's next input is Newell's remap of its features and prediction added to its current input; with several
    tasks the features are first fused: all streams' features are concatenated (S x features channels) and each
    stream applies two residual modules, one keeping S x features channels and one compressing to `features`.
    With a single task this is exactly Newell's network. Prediction heads are float32 under mixed precision.
    """
    task_names = task_table.parse_tasks(tasks)
    image = keras.Input((input_size, input_size, 3), name="image")
    shared = apply_stem(image, features)
    stream_inputs = {task: shared for task in task_names}
    outputs = {}
    for stack in range(num_stacks):
        stream_features, predictions = {}, {}
        for task in task_names:
            prefix = f"{task}_s{stack + 1}"
            x = apply_hourglass(stream_inputs[task], hourglass_depth, features, f"{prefix}_hg")
            x = apply_residual(x, features, f"{prefix}_res")
            x = apply_conv_bn_relu(x, features, 1, f"{prefix}_lin")
            stream_features[task] = x
            predictions[task] = layers.Conv2D(
                task_table.OUTPUT_CHANNELS[task], 1, dtype="float32", name=output_name(task, stack, num_stacks)
            )(x)
            outputs[output_name(task, stack, num_stacks)] = predictions[task]
        if stack == num_stacks - 1:
            break
        if len(task_names) > 1:
            fused = layers.Concatenate(name=f"fuse_s{stack + 1}")([stream_features[t] for t in task_names])
        for task in task_names:
            prefix = f"{task}_s{stack + 1}"
            x = stream_features[task]
            if len(task_names) > 1:
                x = apply_residual(fused, fused.shape[-1], f"{prefix}_fuse_res1")
                x = apply_residual(x, features, f"{prefix}_fuse_res2")
            remapped_features = layers.Conv2D(features, 1, name=f"{prefix}_remap_features")(x)
            remapped_prediction = layers.Conv2D(features, 1, name=f"{prefix}_remap_prediction")(predictions[task])
            stream_inputs[task] = layers.Add(name=f"{prefix}_next")(
                [stream_inputs[task], remapped_features, remapped_prediction]
            )
    return keras.Model({"image": image}, outputs, name=name)
