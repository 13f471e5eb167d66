"""Per-pixel label maps: SMPL part labels -> 14 parts + background, depth -> 19 bins + background."""

import dataclasses

import tensorflow as tf

from mtha_tf import surreal


@dataclasses.dataclass(frozen=True)
class SegmentationCodec:
    """SMPL's 24 part labels -> 15 classes (0 background) with SURREAL's table; decode = arg-max."""

    num_classes: int = surreal.NUM_PART_CLASSES

    def encode(self, smpl_labels, flip=False):
        """uint8/int [..., H, W] labels 0..24 -> int32 classes 0..14; `flip` swaps left and right parts."""
        classes = tf.gather(tf.constant(surreal.SEGMENTATION_LUT, tf.int32), tf.cast(smpl_labels, tf.int32))
        swapped = tf.gather(tf.constant(surreal.PART_FLIP_PERMUTATION, tf.int32), classes)
        return tf.where(tf.cast(flip, tf.bool), swapped, classes)

    def decode(self, logits):
        """[..., H, W, 15] scores -> int32 [..., H, W] class map."""
        return tf.argmax(logits, axis=-1, output_type=tf.int32)


@dataclasses.dataclass(frozen=True)
class DepthCodec:
    """Depth in metres -> 0 background, 1..19 = 45 mm bins around the pelvis depth (Varol et al.; larger = farther).

    Bin k covers ((k - 11) * 45, (k - 10) * 45] mm relative to the pelvis; beyond that the bins 1 and 19 saturate.
    """

    num_bins: int = surreal.NUM_DEPTH_BINS
    step_m: float = surreal.DEPTH_STEP_M

    def encode(self, depth, pelvis_depth):
        """float [..., H, W] metres (0 = background), scalar pelvis depth -> int32 labels 0..19."""
        depth = tf.convert_to_tensor(depth, tf.float32)
        half = (self.num_bins - 1) // 2
        bins = tf.clip_by_value(tf.math.ceil((depth - pelvis_depth) / self.step_m), -half, half) + half + 1
        return tf.where(depth > 0, tf.cast(bins, tf.int32), 0)

    def decode(self, logits):
        """[..., H, W, 20] scores -> (labels int32 [..., H, W], metres relative to the pelvis at bin centres, 0 on
        background)."""
        labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return labels, self.metres(labels)

    def metres(self, labels):
        """int labels -> depth relative to the pelvis at the bin centres (metres), 0 on background."""
        centre = (tf.cast(labels, tf.float32) - (self.num_bins + 1) / 2.0 - 0.5) * self.step_m
        return tf.where(labels > 0, centre, 0.0)
