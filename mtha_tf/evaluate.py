r"""Evaluates a trained work dir on held-out frames: per-part tables, success-rate plots and a prediction grid.

    python -m mtha_tf.evaluate --workdir=W [--data_dir=D] [--split=val|test] [--frame_stride=K] [--batch_size=N]

Writes W/evaluation/ (W/evaluation_test/ for --split=test, W/evaluation_every<K>/ for --frame_stride=K, so that none
overwrites another's tables): results.json (with `evaluated`: the weights, shards and frames it is of), <task>.md and
<task>.csv (rows = parts or joints, as the paper's Tables I-IV), per_frame.npz (each frame's error per task, and per
part or joint), success_rates.png (paper Fig. 3) and predictions.png (input with skeleton, part map, depth map, 3D
skeleton).
"""

import hashlib
import importlib.metadata
import json
import os
import sys
import zipfile

from mtha_tf import cpu_runtime

if __name__ == "__main__":  # forward passes run in one tf.function: oneDNN with frozen weights, before TF starts
    cpu_runtime.configure_for_serving()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from mtha_tf import atomic_files, evaluation, file_locks, report, surreal, visualize  # noqa: E402
from mtha_tf import config as config_lib  # noqa: E402
from mtha_tf.data.crop import transform_points  # noqa: E402
from mtha_tf.data.pipeline import shards_digest  # noqa: E402
from mtha_tf.model import build_model_for  # noqa: E402
from mtha_tf.targets import make_codecs  # noqa: E402


def final_weights(workdir):
    """The path of the work dir's final weights; FileNotFoundError if training there has not finished."""
    weights = os.path.join(workdir, "final.weights.h5")
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{weights}: no final weights; has training in {workdir} finished?")
    return weights


def trained_model(config, weights):
    """The network `config` describes with the weights file `weights` loaded, for inference."""
    # Inference runs in float32 whatever the training precision was (the weights are float32 either way).
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = build_model_for(config)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    model.load_weights(weights)  # inference only: no optimizer to restore
    return model


def load_trained(workdir):
    """(config, model with the work dir's final weights)."""
    config = config_lib.load(os.path.join(workdir, "config.json"))
    return config, trained_model(config, final_weights(workdir))


SPLITS = surreal.SPLITS[1:]  # the held-out ones: val and test (the embedded data has no test clips)


def held_out_pattern(config, workdir, data_dir=None, split="val"):
    data_dir = data_dir or config.data_dir or os.path.join(workdir, "data", "records")
    return os.path.join(data_dir, f"{split}-*.tfrecord")


def split_dir(path, split, frame_stride=1):
    """Where the files of an evaluation on `split` go: `path` for every frame of the validation split, `path_<split>`
    for another (W/evaluation_test), `..._every<K>` for every K-th frame (W/evaluation_every10): evaluating on test, or
    on fewer frames, keeps the other tables (and the study's reusable evaluations)."""
    return path + ("" if split == "val" else f"_{split}") + ("" if frame_stride == 1 else f"_every{frame_stride}")


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


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _package_version():
    try:
        return importlib.metadata.version("mtha-tf")
    except importlib.metadata.PackageNotFoundError:  # run from a clone without installing it
        return "unknown"


def evaluation_key(weights, pattern, frame_stride):
    """What an evaluation's figures depend on: the trained weights, the held-out shards (names and sizes; `held_out`,
    their path, is for people), the frames taken, the package version (its metrics) and what the evaluation holds
    (`evaluation.FORMAT`). Recorded in results.json as `evaluated`."""
    return {"weights_sha256": _sha256(weights), "held_out": pattern, "shards_sha256": shards_digest(pattern),
            "frame_stride": frame_stride, "mtha_tf": _package_version(), "format": evaluation.FORMAT}  # fmt: skip


def _finished_evaluation(out_dir, key):
    """(results, per-frame errors) of an evaluation in `out_dir` made under `key`, or None."""
    try:
        with open(os.path.join(out_dir, "results.json")) as f:
            results = json.load(f)
        with np.load(os.path.join(out_dir, "per_frame.npz")) as saved:
            per_frame = {name: saved[name] for name in saved.files if name != "evaluated"}
            per_frame_key = json.loads(str(saved["evaluated"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # none yet, one from before these files, a damaged one
        return None
    recorded = results.get("evaluated") if isinstance(results, dict) else None
    reusable = _of_the_same(recorded) == _of_the_same(key) == _of_the_same(per_frame_key)
    return (results, per_frame) if reusable else None


def _of_the_same(key):
    """An evaluation key without the shards' path: the same shards (names and sizes) at another path (a study dir
    moved or copied from a cluster, data mounted elsewhere) give the same figures."""
    return {name: value for name, value in key.items() if name != "held_out"} if isinstance(key, dict) else key


def evaluate_workdir(workdir, data_dir=None, split="val", frame_stride=1, reuse=False, batch_size=None, progress=False):
    """Runs the evaluation on `split` (the frames whose index in their clip is a multiple of `frame_stride`); returns
    (results dict, also written to W/evaluation/results.json or its `split_dir`; per-frame errors, also written to
    per_frame.npz there). `reuse`: return the evaluation already there instead when it was made of the same weights,
    shards, frames and package version (the study evaluates its runs again at every command). `batch_size`: images
    per forward pass (default: the run's eval_batch_size; the figures do not depend on it). `progress`: count the
    frames on stderr."""
    config = config_lib.load(os.path.join(workdir, "config.json"))
    pattern = held_out_pattern(config, workdir, data_dir, split)
    out_dir = split_dir(os.path.join(workdir, "evaluation"), split, frame_stride)
    weights = final_weights(workdir)
    try:
        key = evaluation_key(weights, pattern, frame_stride)
    except FileNotFoundError as error:
        if config.data_dir and not data_dir:
            hint = f"the data_dir that {os.path.join(workdir, 'config.json')} records; if its shards are elsewhere now"
        elif not (config.data_dir or data_dir) and split == "test":
            hint = "the run's embedded data, which has no test split; for SURREAL's, converted by data_prep.surreal"
        else:
            raise
        raise FileNotFoundError(f"{error}: {hint}, name them with --data_dir") from None
    # One evaluation of a run at a time: the four targets' studies run at once in one study dir share combinations, and
    # each evaluated a shared one itself (hours on SURREAL's test split); the second now waits, then reuses it.
    lock = os.path.join(workdir, f".{os.path.basename(out_dir)}.lock")
    with file_locks.flocked(lock, waiting_note=f"note: another process is evaluating {workdir} into {out_dir}; "
                            "waiting for it, to reuse its evaluation"):  # fmt: skip
        if reuse and (finished := _finished_evaluation(out_dir, key)):
            return finished
        model = trained_model(config, weights)
        # One traced forward pass for the metrics and the grid: no convolution runs eagerly (cpu_runtime: frozen
        # weights).
        forward = evaluation.forward_function(model)
        results, per_frame = evaluation.evaluate(forward, pattern, config.task_names(),
                                                 batch_size or config.eval_batch_size, config.input_size,
                                                 frame_stride, progress)  # fmt: skip
        results["evaluated"] = key
        name = os.path.basename(os.path.normpath(workdir))
        report.write_tables({name: results}, out_dir, config.task_names())
        report.plot_success_rates({name: per_frame}, os.path.join(out_dir, "success_rates.png"))
        prediction_grid(forward, config, pattern, os.path.join(out_dir, "predictions.png"))
        with atomic_files.replacing(os.path.join(out_dir, "per_frame.npz")) as partial:
            np.savez(partial, evaluated=json.dumps(key), **per_frame)
        atomic_files.write_json(os.path.join(out_dir, "results.json"), results)
    return results, per_frame


def define_flags():
    flags.DEFINE_string("workdir", None, "A finished training work dir.", required=True)
    flags.DEFINE_string("data_dir", None, "TFRecords holding <split>-*.tfrecord; default: the run's own data.")
    flags.DEFINE_enum("split", "val", SPLITS, "The held-out split: SURREAL's val or test (from data_prep.surreal).")
    flags.DEFINE_integer("frame_stride", 1, "Evaluate the frames whose index in their clip is a multiple of this; 1: "
                         "every frame (SURREAL's test split holds ~1.2 M).", lower_bound=1)  # fmt: skip
    flags.DEFINE_integer("batch_size", None, "Images per forward pass; default: the run's eval_batch_size (8 for "
                         "the paper's setup). Larger is faster on a GPU; the figures do not change.",
                         lower_bound=1)  # fmt: skip


def main(argv):
    del argv
    try:
        results, _ = evaluate_workdir(flags.FLAGS.workdir, flags.FLAGS.data_dir, flags.FLAGS.split,
                                      flags.FLAGS.frame_stride, batch_size=flags.FLAGS.batch_size,
                                      progress=True)  # fmt: skip
    except (FileNotFoundError, config_lib.ConfigError) as error:  # no run or an unfinished one, no shards, bad config
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(evaluation.headline(results), indent=1))
    out_dir = split_dir(os.path.join(flags.FLAGS.workdir, "evaluation"), flags.FLAGS.split, flags.FLAGS.frame_stride)
    print(f"per-part tables, plots and results.json in {out_dir}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
