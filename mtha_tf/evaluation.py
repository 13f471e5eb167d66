"""Runs a model over held-out frames, decodes its outputs with the codecs and computes every trained task's metrics."""

import functools
import sys

import numpy as np
import tensorflow as tf

from mtha_tf import metrics, surreal, tasks
from mtha_tf.data import crop
from mtha_tf.data.pipeline import make_dataset, naming_corrupt_files, require_examples
from mtha_tf.targets import make_codecs


def evaluation_dataset(file_pattern, trained_tasks, batch_size, input_size, frame_stride=1):
    """Held-out frames in order (those whose index in their clip is a multiple of `frame_stride`), without
    augmentation, with the targets the metrics need (label maps only: the pose metrics use the original joints
    carried in the metadata)."""
    needed = [
        t for t in ("segmentation", "depth") if t in trained_tasks or (t == "segmentation" and "depth" in trained_tasks)
    ]
    return make_dataset(file_pattern, needed or ["pose2d"], training=False, batch_size=batch_size,
                        input_size=input_size, frame_stride=frame_stride)  # fmt: skip


# What an evaluation holds, in results.json and per_frame.npz: an evaluation of another format is made again, not reused
# (2: per-frame errors per part or joint, per-part pixel accuracy).
FORMAT = 2


def part_errors(task):
    """The name of a task's per-frame errors per part or joint among an evaluation's per-frame errors."""
    return f"{task}_per_part"


def _to_frame(points, matrix):
    """Heatmap-grid points [B, K, 2] -> original frame pixels through each example's inverse crop [B, 3, 3]."""
    return crop.transform_points(tf.linalg.inv(matrix), points)


class _Accumulator:
    def __init__(self, trained_tasks, heatmap_size):
        self.tasks = trained_tasks
        self.codecs = make_codecs(heatmap_size)
        self.heatmap_size = heatmap_size
        self.lists = {}
        # Label-map metrics are reduced batch by batch: a split's maps would not fit in memory (SURREAL's test split,
        # 1.2 M frames, holds 60 GB of 64x64 depth, ground-truth and part maps).
        self.confusion = np.zeros((surreal.NUM_PART_CLASSES,) * 2, np.int64)
        self.depth_part_errors = np.zeros((surreal.NUM_PART_CLASSES, 2))
        self.foreground_counts = np.zeros(2, np.int64)

    def add(self, name, value):
        self.lists.setdefault(name, []).append(np.asarray(value))

    def update(self, outputs, inputs, targets):
        matrix = inputs["heatmap_matrix"]
        if "pose2d" in self.tasks:
            grid, _ = self.codecs["pose2d"].decode(outputs["pose2d"])
            self.add("pred2d", _to_frame(grid, matrix))
            self.add("pred2d_grid", grid)
            self.add("gt2d_grid", crop.transform_points(matrix, inputs["joints2d"]))
            self.add("gt2d", inputs["joints2d"])
            self.add("head_length", inputs["head_length"])
        if "pose3d" in self.tasks:
            grid, bins, _ = self.codecs["pose3d"].decode(outputs["pose3d"])
            lifted = self.codecs["pose3d"].lift(
                _to_frame(grid, matrix), bins, inputs["pelvis_depth"], inputs["intrinsics"]
            )
            self.add("pred3d", lifted / 1000.0)
            self.add("gt3d", inputs["joints3d"])
        if "segmentation" in self.tasks:
            pred = self.codecs["segmentation"].decode(outputs["segmentation"]).numpy()
            gt = targets["segmentation"].numpy()
            self.confusion += metrics.confusion(pred, gt, surreal.NUM_PART_CLASSES)
            self.add("segmentation_pixel_accuracy", (pred == gt).mean(axis=(1, 2)))
            self.add(part_errors("segmentation"), metrics.pixel_error_per_class(pred, gt).astype(np.float32))
        if "depth" in self.tasks:
            pred = self.codecs["depth"].decode(outputs["depth"])[0].numpy()
            gt, parts = targets["depth"].numpy(), targets["segmentation"].numpy()
            self.add("depth_rmse_bins", metrics.depth_rmse_bins(pred, gt))
            self.add("depth_rmse_bins_union", metrics.depth_rmse_bins_union(pred, gt))
            per_image = metrics.depth_squared_errors_per_part(pred, gt, parts)
            self.depth_part_errors += per_image.sum(axis=0)
            self.add(part_errors("depth"), metrics.rmse_from_squared_errors(per_image).astype(np.float32))
            self.foreground_counts += metrics.foreground_counts(pred, gt)

    def results(self):
        """Nested dict of JSON-ready metrics, and per-frame errors (for success-rate curves): per task [N] and per
        part or joint (`part_errors(task)`, [N, P] in the order of the task's table; NaN where one is not seen)."""
        arrays = {name: np.concatenate(values) for name, values in self.lists.items()}
        results, per_frame = {}, {}
        if "pose2d" in self.tasks:
            gt = arrays["gt2d"]
            visible = (gt[..., 1] > 0) & (gt[..., 0] >= 0) & (gt[..., 0] < surreal.FRAME_WIDTH)
            visible &= gt[..., 1] < surreal.FRAME_HEIGHT
            per_joint = metrics.pckh(arrays["pred2d"], gt, arrays["head_length"], visible)
            _, newell = metrics.newell_pck(arrays["pred2d_grid"], arrays["gt2d_grid"], self.heatmap_size)
            results["pose2d"] = {
                "pckh": metrics.pckh_mean(per_joint, visible),
                "pckh_per_joint": dict(zip(surreal.MPII_JOINT_NAMES, per_joint.tolist(), strict=True)),
                "pck_newell": newell,
            }
            distance = np.linalg.norm(arrays["pred2d"] - gt, axis=-1) / arrays["head_length"][:, None]
            distance = np.where(visible, distance, np.nan)
            per_frame["pose2d"] = np.nanmean(distance, axis=1)
            per_frame[part_errors("pose2d")] = distance.astype(np.float32)
        if "segmentation" in self.tasks:
            summary = metrics.segmentation_summary(self.confusion)
            iou, recall = summary.pop("iou_per_class"), summary.pop("recall_per_class")
            results["segmentation"] = dict(
                summary,
                iou_per_part=dict(zip(surreal.PART_NAMES, iou.tolist(), strict=True)),
                pixel_accuracy_per_part=dict(zip(surreal.PART_NAMES, recall.tolist(), strict=True)),
            )
            per_frame["segmentation"] = 1.0 - arrays["segmentation_pixel_accuracy"]
            per_frame[part_errors("segmentation")] = arrays[part_errors("segmentation")]
        if "depth" in self.tasks:
            per_image = arrays["depth_rmse_bins"]
            per_part = metrics.rmse_from_squared_errors(self.depth_part_errors)
            step_mm = 1000 * surreal.DEPTH_STEP_M
            union = arrays["depth_rmse_bins_union"]
            results["depth"] = {
                "rmse_bins": float(np.nanmean(per_image)),
                "rmse_mm": float(np.nanmean(per_image) * step_mm),
                "rmse_mm_foreground_union": float(np.nanmean(union) * step_mm),
                "foreground_iou": metrics.iou_from_counts(self.foreground_counts),
                "rmse_mm_per_part": dict(zip(surreal.PART_NAMES, (per_part * step_mm).tolist(), strict=True)),
            }
            per_frame["depth"] = per_image * step_mm
            per_frame[part_errors("depth")] = arrays[part_errors("depth")] * np.float32(step_mm)
        if "pose3d" in self.tasks:
            distances = metrics.joint_distances_mm(arrays["pred3d"], arrays["gt3d"])
            per_joint = distances.mean(axis=0)
            results["pose3d"] = {
                "mjd_mm": float(per_joint.mean()),
                "mjd_mm_per_joint": dict(zip(surreal.MPII_JOINT_NAMES, per_joint.tolist(), strict=True)),
            }
            per_frame["pose3d"] = distances.mean(axis=1)
            per_frame[part_errors("pose3d")] = distances.astype(np.float32)
        results["num_frames"] = int(len(next(iter(arrays.values()))))
        return results, per_frame


def forward_function(model):
    """The model's inference pass as a local tf.function. Not Keras' predict_on_batch: under MultiWorkerMirroredStrategy
    that all-gathers across workers, so an evaluation run by the chief alone would wait for the others forever."""
    # One trace for every batch size (the last batch of a split is smaller, the prediction grid takes a few frames):
    # a trace of the multi-stream model takes seconds, and a study, which trains one model after another in one
    # process, otherwise drew TensorFlow's "excessive number of tracings" warning. A partial, not a lambda: TensorFlow
    # counts the traces of every tf.function made of one code object together, so the single trace of each model's
    # own function (three models in one study process) drew the same warning.
    image_spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
    return tf.function(functools.partial(_infer, model), input_signature=[image_spec])


def _infer(model, images):
    return model({"image": images}, training=False)


def _frames_done(file_pattern, shown):
    """A count of the frames evaluated on stderr (`shown`), else a stand-in that counts nothing: SURREAL's test split
    takes hours, and the evaluation said nothing until its end. Into a file (a job's log) once a minute."""
    from tqdm import tqdm

    interval = 1.0 if sys.stderr.isatty() else 60.0
    return tqdm(desc=f"evaluating {file_pattern}", unit=" frames", disable=not shown, mininterval=interval,
                file=sys.stderr)  # fmt: skip


def evaluate(forward, file_pattern, trained_tasks, batch_size=8, input_size=256, frame_stride=1, progress=False):
    """Metrics of a model on the shards matching `file_pattern`, on the frames whose index in their clip is a multiple
    of `frame_stride`: (results dict, per-frame errors by task).

    `forward`: the model's `forward_function`, kept by the caller so that it is traced once (the callbacks evaluate at
    every epoch); the evaluation never calls the model eagerly (cpu_runtime: frozen weights). `progress`: count the
    frames on stderr as they are evaluated.
    """
    trained_tasks = tasks.parse_tasks(trained_tasks)
    accumulator = _Accumulator(trained_tasks, input_size // 4)
    dataset = evaluation_dataset(file_pattern, trained_tasks, batch_size, input_size, frame_stride)
    batches = 0
    with naming_corrupt_files(file_pattern), _frames_done(file_pattern, progress) as frames:
        for inputs, targets in dataset:
            outputs = forward(inputs["image"])
            accumulator.update({t: outputs[t] for t in trained_tasks}, inputs, targets)
            batches += 1
            frames.update(int(inputs["image"].shape[0]))
    if not batches:  # no metrics of no frames: the error names the shards (checked only then, not every epoch)
        require_examples(file_pattern)
        raise FileNotFoundError(f"{file_pattern}: no frame whose index in its clip is a multiple of {frame_stride}")
    results, per_frame = accumulator.results()
    results["frame_stride"] = frame_stride  # beside num_frames: which frames the figures are of
    return results, per_frame


# The paper's number per task, plus for depth what its reference RMSE cannot show (see metrics.depth_rmse_bins_union).
HEADLINE = (("pose2d", "pckh"), ("segmentation", "mean_iou_parts"), ("depth", "rmse_mm"),
            ("depth", "rmse_mm_foreground_union"), ("depth", "foreground_iou"), ("pose3d", "mjd_mm"))  # fmt: skip


def headline(results):
    """The numbers per task that train.py prints and metrics.json summarises (higher is better for pose2d PCKh, IoUs;
    lower for the errors in mm)."""
    return {f"{task}_{key}": results[task][key] for task, key in HEADLINE if task in results}
