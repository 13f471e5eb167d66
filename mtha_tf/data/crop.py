"""The person crop as one affine transform, shared by the image, the label maps and the joints.

Conventions: pixel i has its centre at coordinate i, in the frame and in the crop. `crop_matrix` maps frame pixels to
crop pixels at a given resolution; the crop is the square of side 200 * scale around the centre (Newell's convention),
rotated by `rotation` degrees and optionally mirrored. Images are resampled with `tf.raw_ops.ImageProjectiveTransformV3`
(TF core; tensorflow-addons is end-of-life), which takes the inverse map (crop -> frame).
"""

import math

import tensorflow as tf

from mtha_tf import surreal


def person_center_scale(joints2d):
    """SURREAL's person box (training/util.lua) from [..., K, 2] 0-based joints -> centre [..., 2], scale [...]."""
    joints2d = tf.convert_to_tensor(joints2d, tf.float32)
    low, high = tf.reduce_min(joints2d, axis=-2), tf.reduce_max(joints2d, axis=-2)
    size = high - low + 1.0
    low -= size * tf.constant([0.25, 0.35])  # more room above the head than below the feet
    high += size * 0.25
    size = high - low + 1.0
    return low + size / 2.0, tf.reduce_max(size, axis=-1) / float(surreal.FRAME_HEIGHT)


def crop_matrix(center, scale, resolution, rotation=0.0, flip=False):
    """3x3 float32 matrix taking frame pixel coordinates to crop pixel coordinates at `resolution`.

    The crop window [c - h/2, c + h/2] (h = 200 * scale) covers crop pixels [-0.5, resolution - 0.5]; rotation is
    about the crop centre in degrees; `flip` mirrors the crop left-right afterwards.
    """
    center = tf.convert_to_tensor(center, tf.float32)
    zoom = resolution / (200.0 * tf.cast(scale, tf.float32))
    half = resolution / 2.0 - 0.5
    angle = tf.cast(rotation, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    # x' = R * zoom * (x - c) + half, then optionally x' -> 2 * half - x'.
    a = tf.stack([cos, -sin])
    b = tf.stack([sin, cos])
    mirror = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    row0 = tf.concat([mirror * a, [mirror * (-tf.tensordot(a, center, 1)) + half]], 0)
    row1 = tf.concat([b, [-tf.tensordot(b, center, 1) + half]], 0)
    return tf.stack([row0, row1, tf.constant([0.0, 0.0, 1.0])])


def transform_points(matrix, points):
    """Applies affine matrices [..., 3, 3] to point sets [..., K, 2] (the leading dimensions match)."""
    points = tf.convert_to_tensor(points, tf.float32)
    return tf.einsum("...ij,...kj->...ki", matrix[..., :2, :2], points) + matrix[..., None, :2, 2]


def warp(image, matrix, resolution, interpolation):
    """Resamples [H, W, C] `image` into the [resolution, resolution, C] crop; outside the frame is 0.

    `interpolation` is "BILINEAR" (RGB) or "NEAREST" (label maps, depth: values are copied, never mixed).
    """
    return warp_to_shape(image, matrix, tf.constant([resolution, resolution]), interpolation)


def warp_to_shape(image, matrix, output_shape, interpolation):
    """`warp` into any [height, width] (`output_shape`, int32 [2]): e.g. a label map back into an image's frame."""
    inverse = tf.linalg.inv(matrix)
    transform = tf.reshape(tf.concat([inverse[0], inverse[1, :], inverse[2, :2]], 0), [1, 8])
    dtype = image.dtype
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=transform,
        output_shape=tf.cast(output_shape, tf.int32),
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )[0]
    if dtype.is_integer:
        warped = tf.round(warped)
    return tf.cast(warped, dtype)
