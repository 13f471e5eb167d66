"""3D pose <-> BodyNet's volumetric heatmaps (64 x 64 x 19 per joint, 304 channels, channel = joint * 19 + z)."""

import dataclasses

import tensorflow as tf

from mtha_tf import surreal
from mtha_tf.targets.pose2d import gaussian_1d

CENTRE_BIN = (surreal.NUM_DEPTH_BINS + 1) // 2  # 10: the pelvis's bin, 1-based as in BodyNet


@dataclasses.dataclass(frozen=True)
class Pose3DCodec:
    """x, y on the 2D heatmap grid; z = pelvis-relative depth in 45 mm bins, rounded, clipped to +-9 bins.

    Bins are numbered 1..19 as in BodyNet (the pelvis is bin 10, larger = closer to the camera); the channel of
    (joint j, bin z) is j * 19 + (z - 1). The target is a 3D Gaussian of std 1.75 voxels in a 7x7x7 window, peak 1.
    """

    heatmap_size: int = 64
    num_joints: int = surreal.NUM_JOINTS
    num_bins: int = surreal.NUM_DEPTH_BINS
    step_m: float = surreal.DEPTH_STEP_M
    sigma: float = 1.75
    radius: int = 3

    def z_bins(self, joints3d):
        """[..., K, 3] camera metres -> int32 [..., K] bins 1..19 from the depth relative to the pelvis."""
        joints3d = tf.convert_to_tensor(joints3d, tf.float32)
        relative = -(joints3d[..., 2] - joints3d[..., surreal.PELVIS : surreal.PELVIS + 1, 2])
        half = (self.num_bins - 1) // 2
        return tf.cast(tf.clip_by_value(tf.round(relative / self.step_m), -half, half), tf.int32) + CENTRE_BIN

    def encode(self, joints, joints3d, visible):
        """joints [K, 2] heatmap px, joints3d [K, 3] camera metres, visible [K] -> float32 [S, S, K * 19]."""
        centres = tf.round(tf.convert_to_tensor(joints, tf.float32))
        gx = gaussian_1d(centres[:, 0], self.heatmap_size, self.sigma, self.radius)
        gy = gaussian_1d(centres[:, 1], self.heatmap_size, self.sigma, self.radius)
        z = tf.cast(self.z_bins(joints3d) - 1, tf.float32)
        gz = gaussian_1d(z, self.num_bins, self.sigma, self.radius) * tf.cast(visible, tf.float32)[:, None]
        volume = tf.einsum("ky,kx,kz->yxkz", gy, gx, gz)
        return tf.reshape(volume, [self.heatmap_size, self.heatmap_size, self.num_joints * self.num_bins])

    def decode(self, volumes):
        """[B, S, S, K * 19] -> (joints [B, K, 2] heatmap px, bins int32 [B, K] 1..19, confidence [B, K]).

        Plain arg-max over each joint's voxels, no sub-voxel refinement (BodyNet's getPreds3DCropped).
        """
        volumes = tf.convert_to_tensor(volumes, tf.float32)
        size, bins = self.heatmap_size, self.num_bins
        per_joint = tf.reshape(volumes, [-1, size * size, self.num_joints, bins])
        flat = tf.reshape(tf.transpose(per_joint, [0, 2, 1, 3]), [-1, self.num_joints, size * size * bins])
        index = tf.argmax(flat, axis=-1, output_type=tf.int32)
        pixel, z = index // bins, index % bins
        joints = tf.cast(tf.stack([pixel % size, pixel // size], axis=-1), tf.float32)
        return joints, z + 1, tf.reduce_max(flat, axis=-1)

    def lift(self, joints_frame, bins, pelvis_depth, intrinsics):
        """Frame pixels [B, K, 2] and bins [B, K] -> pelvis-relative camera coordinates in millimetres [B, K, 3].

        z = pelvis depth - (bin - 10) * 45 mm, then x, y by back-projection through the intrinsics [B, 3, 3]
        (BodyNet's reconstruct3D); the result has its own pelvis subtracted.
        """
        depth = pelvis_depth[:, None] - tf.cast(bins - CENTRE_BIN, tf.float32) * self.step_m
        focal = tf.stack([intrinsics[:, 0, 0], intrinsics[:, 1, 1]], axis=-1)[:, None]
        principal = intrinsics[:, :2, 2][:, None]
        xy = (joints_frame - principal) / focal * depth[..., None]
        camera = tf.concat([xy, depth[..., None]], axis=-1)
        return 1000.0 * (camera - camera[:, surreal.PELVIS : surreal.PELVIS + 1])
