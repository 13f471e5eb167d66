"""The four tasks: their names (used as keys everywhere), output channels and kind of target.

Plain Python and NumPy, no TensorFlow: the PyTorch peer of the benchmarks imports it on machines without TensorFlow.
The target codecs are in `mtha_tf.targets`.
"""

from mtha_tf import surreal

TASKS = ("pose2d", "segmentation", "depth", "pose3d")

OUTPUT_CHANNELS = {
    "pose2d": surreal.NUM_JOINTS,
    "segmentation": surreal.NUM_PART_CLASSES,
    "depth": surreal.NUM_DEPTH_CLASSES,
    "pose3d": surreal.NUM_JOINTS * surreal.NUM_DEPTH_BINS,
}

# Targets that are per-pixel class labels (trained with cross-entropy); the others are heatmaps (trained with RMSE).
LABEL_MAP_TASKS = ("segmentation", "depth")


def parse_tasks(tasks):
    """ "pose2d,depth" or a sequence -> a tuple in canonical order; rejects unknown names and empty sets."""
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {names}")
    return tuple(t for t in TASKS if t in names)
