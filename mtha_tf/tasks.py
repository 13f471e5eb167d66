"""The four tasks: their names (used as keys everywhere), output channels and target codecs."""

from mtha_tf import surreal
from mtha_tf.targets.labels import DepthCodec, SegmentationCodec
from mtha_tf.targets.pose2d import Pose2DCodec
from mtha_tf.targets.pose3d import Pose3DCodec

TASKS = ("pose2d", "segmentation", "depth", "pose3d")

OUTPUT_CHANNELS = {
    "pose2d": surreal.NUM_JOINTS,
    "segmentation": surreal.NUM_PART_CLASSES,
    "depth": surreal.NUM_DEPTH_CLASSES,
    "pose3d": surreal.NUM_JOINTS * surreal.NUM_DEPTH_BINS,
}


def codecs(heatmap_size=64):
    """One codec per task, sized for the network's output resolution."""
    return {
        "pose2d": Pose2DCodec(heatmap_size=heatmap_size),
        "segmentation": SegmentationCodec(),
        "depth": DepthCodec(),
        "pose3d": Pose3DCodec(heatmap_size=heatmap_size),
    }


def parse_tasks(tasks):
    """ "pose2d,depth" or a sequence -> a tuple in canonical order; rejects unknown names and empty sets."""
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {names}")
    return tuple(t for t in TASKS if t in names)
