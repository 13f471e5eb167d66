"""2D pose <-> Newell's joint heatmaps."""

import dataclasses

import tensorflow as tf

from mtha_tf import surreal


def gaussian_1d(centres, size, sigma, radius):
    """[..., N] integer centres -> [..., N, size] unnormalised Gaussians exp(-d^2 / 2 sigma^2), zero beyond `radius`.

    Products of these give Newell's/BodyNet's truncated 2D and 3D Gaussians exactly (peak 1 at the centre).
    """
    grid = tf.range(size, dtype=tf.float32)
    distance = grid - centres[..., None]
    values = tf.exp(-tf.square(distance) / (2.0 * sigma**2))
    return tf.where(tf.abs(distance) <= radius, values, 0.0)


@dataclasses.dataclass(frozen=True)
class Pose2DCodec:
    """16 Gaussian heatmaps at 64x64: 7x7 window, std 1.75 px, peak 1 at the joint's rounded position."""

    heatmap_size: int = 64
    num_joints: int = surreal.NUM_JOINTS
    sigma: float = 1.75
    radius: int = 3

    def encode(self, joints, visible):
        """joints [K, 2] heatmap px, visible [K] bool -> float32 [S, S, K]; invisible joints get an empty map."""
        centres = tf.round(tf.convert_to_tensor(joints, tf.float32))
        gx = gaussian_1d(centres[:, 0], self.heatmap_size, self.sigma, self.radius)  # [K, S]
        gy = gaussian_1d(centres[:, 1], self.heatmap_size, self.sigma, self.radius)
        gx *= tf.cast(visible, tf.float32)[:, None]
        return tf.einsum("ky,kx->yxk", gy, gx)

    def decode(self, heatmaps):
        """[..., S, S, K] -> (joints [..., K, 2] heatmap px, confidence [..., K]).

        Arg-max, then a quarter pixel toward the higher neighbour on each axis (Newell's refinement).
        """
        heatmaps = tf.convert_to_tensor(heatmaps, tf.float32)
        size = self.heatmap_size
        flat = tf.reshape(
            tf.experimental.numpy.moveaxis(heatmaps, -1, -3),
            tf.concat([tf.shape(heatmaps)[:-3], [self.num_joints, size * size]], 0),
        )
        index = tf.argmax(flat, axis=-1, output_type=tf.int32)
        confidence = tf.reduce_max(flat, axis=-1)
        x, y = index % size, index // size

        def value_at(dx, dy):
            xx, yy = tf.clip_by_value(x + dx, 0, size - 1), tf.clip_by_value(y + dy, 0, size - 1)
            return tf.gather(flat, yy * size + xx, batch_dims=len(flat.shape) - 1)

        shift_x = tf.where((x > 0) & (x < size - 1), 0.25 * tf.sign(value_at(1, 0) - value_at(-1, 0)), 0.0)
        shift_y = tf.where((y > 0) & (y < size - 1), 0.25 * tf.sign(value_at(0, 1) - value_at(0, -1)), 0.0)
        joints = tf.stack([tf.cast(x, tf.float32) + shift_x, tf.cast(y, tf.float32) + shift_y], axis=-1)
        return joints, confidence
