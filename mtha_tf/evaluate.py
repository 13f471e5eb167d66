r"""Evaluates a trained work dir on held-out frames: per-part tables, success-rate plots and a prediction grid.

    python -m mtha_tf.evaluate --workdir=W [--data_dir=D] [--split=val|test]

Writes W/evaluation/ (W/evaluation_test/ for --split=test): results.json, <task>.md and <task>.csv (rows = parts or
joints, as the paper's Tables I-IV), success_rates.png (paper Fig. 3) and predictions.png (input with skeleton, part
map, depth map, 3D skeleton).
"""

import json
import os
import sys

from mtha_tf import cpu_runtime

if __name__ == "__main__":  # forward passes run in one tf.function: oneDNN with frozen weights, before TF starts
    cpu_runtime.configure_for_serving()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from mtha_tf import atomic_files, evaluation, report, surreal, visualize  # noqa: E402
from mtha_tf import config as config_lib  # noqa: E402
from mtha_tf.data.crop import transform_points  # noqa: E402
from mtha_tf.model import build_model_for  # noqa: E402
from mtha_tf.targets import make_codecs  # noqa: E402


def load_trained(workdir):
    """(config, model with the work dir's final weights)."""
    config = config_lib.load(os.path.join(workdir, "config.json"))
    weights = os.path.join(workdir, "final.weights.h5")
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{weights}: no final weights; has training in {workdir} finished?")
    # Inference runs in float32 whatever the training precision was (the weights are float32 either way).
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = build_model_for(config)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    model.load_weights(weights)  # inference only: no optimizer to restore
    return config, model


SPLITS = surreal.SPLITS[1:]  # the held-out ones: val and test (the embedded data has no test clips)


def held_out_pattern(config, workdir, data_dir=None, split="val"):
    data_dir = data_dir or config.data_dir or os.path.join(workdir, "data", "records")
    return os.path.join(data_dir, f"{split}-*.tfrecord")


def split_dir(path, split):
    """Where the files of an evaluation on `split` go: `path` for the validation split, `path_<split>` for another
    (W/evaluation_test), so that evaluating on test keeps the validation tables."""
    return path if split == "val" else f"{path}_{split}"


def prediction_grid(forward, config, pattern, path, count=6):
    """Writes a PNG with one row per held-out frame; `forward`: the model's `evaluation.forward_function`."""
    inputs, _ = next(iter(evaluation.evaluation_dataset(pattern, config.task_names(), count, config.input_size)))
    outputs = forward(inputs["image"])
    codecs = make_codecs(config.input_size // 4)
    rows = visualize.prediction_rows(inputs["image"], outputs, codecs)
    if "pose3d" in outputs:
        grid, bins, _ = codecs["pose3d"].decode(outputs["pose3d"])
        frame = transform_points(tf.linalg.inv(inputs["heatmap_matrix"]), grid)
        lifted = codecs["pose3d"].lift(frame, bins, inputs["pelvis_depth"], inputs["intrinsics"]).numpy()
        rows = [np.concatenate([row, visualize.skeleton_3d(joints, config.input_size)], axis=1)
                for row, joints in zip(rows, lifted, strict=True)]  # fmt: skip
    return visualize.write_image(path, np.concatenate(rows, axis=0))


def evaluate_workdir(workdir, data_dir=None, split="val", frame_stride=1):
    """Runs the evaluation on `split` (the frames whose index in their clip is a multiple of `frame_stride`); returns
    (results dict, also written to W/evaluation/results.json or its `split_dir`; per-frame errors)."""
    config, model = load_trained(workdir)
    # One traced forward pass for the metrics and the grid: no convolution runs eagerly (cpu_runtime: frozen weights).
    forward = evaluation.forward_function(model)
    pattern = held_out_pattern(config, workdir, data_dir, split)
    results, per_frame = evaluation.evaluate(forward, pattern, config.task_names(), config.eval_batch_size,
                                             config.input_size, frame_stride)  # fmt: skip
    out_dir = split_dir(os.path.join(workdir, "evaluation"), split)
    name = os.path.basename(os.path.normpath(workdir))
    report.write_tables({name: results}, out_dir, config.task_names())
    report.plot_success_rates({name: per_frame}, os.path.join(out_dir, "success_rates.png"))
    prediction_grid(forward, config, pattern, os.path.join(out_dir, "predictions.png"))
    atomic_files.write_json(os.path.join(out_dir, "results.json"), results)
    return results, per_frame


def define_flags():
    flags.DEFINE_string("workdir", None, "A finished training work dir.", required=True)
    flags.DEFINE_string("data_dir", None, "TFRecords holding <split>-*.tfrecord; default: the run's own data.")
    flags.DEFINE_enum("split", "val", SPLITS, "The held-out split: SURREAL's val or test (from data_prep.surreal).")
    flags.DEFINE_integer("frame_stride", 1, "Evaluate the frames whose index in their clip is a multiple of this; 1: "
                         "every frame (SURREAL's test split holds ~1.2 M).", lower_bound=1)  # fmt: skip


def main(argv):
    del argv
    try:
        results, _ = evaluate_workdir(flags.FLAGS.workdir, flags.FLAGS.data_dir, flags.FLAGS.split,
                                      flags.FLAGS.frame_stride)  # fmt: skip
    except (FileNotFoundError, config_lib.ConfigError) as error:  # no run or an unfinished one, no shards, bad config
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(evaluation.headline(results), indent=1))
    out_dir = split_dir(os.path.join(flags.FLAGS.workdir, "evaluation"), flags.FLAGS.split)
    print(f"per-part tables, plots and results.json in {out_dir}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
