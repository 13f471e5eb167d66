"""Target codecs: `encode` (labels -> training targets, in tf.data) and `decode` (network outputs -> joints or maps)."""

from mtha_tf.targets.labels import DepthCodec, SegmentationCodec
from mtha_tf.targets.pose2d import Pose2DCodec
from mtha_tf.targets.pose3d import Pose3DCodec


def make_codecs(heatmap_size=64):
    """One codec per task (keyed as `mtha_tf.tasks.TASKS`), sized for the network's output resolution."""
    return {
        "pose2d": Pose2DCodec(heatmap_size=heatmap_size),
        "segmentation": SegmentationCodec(),
        "depth": DepthCodec(),
        "pose3d": Pose3DCodec(heatmap_size=heatmap_size),
    }
