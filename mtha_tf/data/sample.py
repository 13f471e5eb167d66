"""One decoded SURREAL frame -> (inputs, targets): crop, augment, normalise, encode every requested task's target."""

import tensorflow as tf

from mtha_tf import surreal
from mtha_tf.data import crop
from mtha_tf.targets import make_codecs


def normalise_image(rgb):
    """RGB in [0, 1] -> SURREAL's whitening (the export applies the same function)."""
    return (rgb - tf.constant(surreal.RGB_MEAN)) / tf.constant(surreal.RGB_STD)


def make_sample(frame, task_names, augmentation, input_size=256, with_metadata=False):
    """frame: the dict of `schema.parse_example`; augmentation: see `augment.sample_augmentation`.

    Returns (inputs, targets): inputs["image"] float32 [input_size, input_size, 3]; targets keyed by task at
    input_size / 4. With `with_metadata`, inputs also carries what metrics need to go back to the original frame.
    """
    heatmap_size = input_size // 4
    codecs = make_codecs(heatmap_size)
    centre, scale = crop.person_center_scale(frame["joints2d"])
    scale *= augmentation["scale_factor"]
    flip = augmentation["flip"]
    to_input = crop.crop_matrix(centre, scale, input_size, augmentation["rotation"], flip)
    to_heatmap = crop.crop_matrix(centre, scale, heatmap_size, augmentation["rotation"], flip)

    rgb = crop.warp(tf.cast(frame["image"], tf.float32) / 255.0, to_input, input_size, "BILINEAR")
    rgb = tf.clip_by_value(rgb * augmentation["colour_gain"], 0.0, 1.0)
    inputs = {"image": normalise_image(rgb)}

    # A flip mirrors positions and swaps left/right identities: joint channels and part classes.
    joints = crop.transform_points(to_heatmap, frame["joints2d"])
    order = tf.where(flip, tf.constant(surreal.JOINT_FLIP_PERMUTATION, tf.int32), tf.range(surreal.NUM_JOINTS))
    joints = tf.gather(joints, order)
    joints3d = tf.gather(frame["joints3d"], order)
    visible = tf.gather(frame["joints2d"][:, 1] > 0, order)  # SURREAL/BodyNet: no target for y <= 0

    targets = {}
    if "pose2d" in task_names:
        targets["pose2d"] = codecs["pose2d"].encode(joints, visible)
    if "pose3d" in task_names:
        targets["pose3d"] = codecs["pose3d"].encode(joints, joints3d, visible)
    if "segmentation" in task_names:
        labels = crop.warp(frame["segmentation"][..., None], to_heatmap, heatmap_size, "NEAREST")[..., 0]
        targets["segmentation"] = codecs["segmentation"].encode(labels, flip)
    if "depth" in task_names:
        depth = crop.warp(frame["depth"][..., None], to_heatmap, heatmap_size, "NEAREST")[..., 0]
        targets["depth"] = codecs["depth"].encode(depth, frame["joints3d"][surreal.PELVIS, 2])

    if with_metadata:
        inputs.update(
            center=centre,
            scale=scale,
            heatmap_matrix=to_heatmap,
            joints2d=frame["joints2d"],
            joints3d=frame["joints3d"],
            pelvis_depth=frame["joints3d"][surreal.PELVIS, 2],
            head_length=tf.norm(frame["joints2d"][surreal.HEAD_TOP] - frame["joints2d"][surreal.UPPER_NECK]),
            intrinsics=frame["intrinsics"],
            clip=frame["clip"],
            frame=frame["frame"],
        )
    return inputs, targets
