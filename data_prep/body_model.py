"""A volumetric SMPL-like body for the synthetic clips: SMPL's 24-joint tree, shape, joint limits, smooth motion.

Coordinates follow SMPL: metres, x to the body's left, y up, z forward; rest pose is SMPL's T-pose. Each of SMPL's 24
segmentation parts is one ellipsoid rigidly attached to the joint that starts it (part p <-> joint p - 1), so part
labels, depth and joints come from one geometry.
"""

import numpy as np
from scipy.spatial.transform import Rotation

PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])

# Offset of each joint from its parent in the rest pose, for a 1.70 m adult.
REST_OFFSETS = np.array([
    [0.00, 0.00, 0.00], [0.07, -0.08, -0.01], [-0.07, -0.08, -0.01], [0.00, 0.11, -0.02],
    [0.03, -0.38, 0.00], [-0.03, -0.38, 0.00], [0.00, 0.13, 0.00], [-0.01, -0.40, -0.04],
    [0.01, -0.40, -0.04], [0.00, 0.06, 0.02], [0.02, -0.05, 0.12], [-0.02, -0.05, 0.12],
    [0.00, 0.21, -0.03], [0.07, 0.11, -0.01], [-0.07, 0.11, -0.01], [0.00, 0.09, 0.05],
    [0.11, 0.03, -0.01], [-0.11, 0.03, -0.01], [0.26, -0.01, -0.02], [-0.26, -0.01, -0.02],
    [0.25, 0.01, 0.00], [-0.25, 0.01, 0.00], [0.08, -0.01, -0.01], [-0.08, -0.01, -0.01],
])  # fmt: skip

# Part geometry, one entry per SMPL part label 1..24 (attached to joint label - 1):
# ("limb", end, radius): an ellipsoid from the joint to `end` (a child joint index, or a rest-frame point);
# ("blob", centre, radii): an axis-aligned ellipsoid around a point of the joint's frame.
PART_GEOMETRY = (
    ("blob", (0.0, -0.05, 0.0), (0.16, 0.11, 0.11)),  # 1 hips
    ("limb", 4, 0.075), ("limb", 5, 0.075),  # 2, 3 up-legs
    ("blob", (0.0, 0.06, 0.0), (0.15, 0.10, 0.10)),  # 4 spine
    ("limb", 7, 0.055), ("limb", 8, 0.055),  # 5, 6 legs
    ("blob", (0.0, 0.05, 0.01), (0.16, 0.09, 0.11)),  # 7 spine1
    ("limb", 10, 0.045), ("limb", 11, 0.045),  # 8, 9 feet
    ("blob", (0.0, 0.09, -0.01), (0.17, 0.11, 0.11)),  # 10 spine2 (chest)
    ("limb", (0.0, -0.01, 0.07), 0.035), ("limb", (0.0, -0.01, 0.07), 0.035),  # 11, 12 toes
    ("limb", 15, 0.05),  # 13 neck
    ("limb", 16, 0.06), ("limb", 17, 0.06),  # 14, 15 shoulders (clavicles)
    ("blob", (0.0, 0.06, 0.01), (0.085, 0.115, 0.10)),  # 16 head
    ("limb", 18, 0.05), ("limb", 19, 0.05),  # 17, 18 upper arms
    ("limb", 20, 0.04), ("limb", 21, 0.04),  # 19, 20 forearms
    ("limb", 22, 0.035), ("limb", 23, 0.035),  # 21, 22 hands
    ("limb", (0.08, 0.0, 0.0), 0.025), ("limb", (-0.08, 0.0, 0.0), 0.025),  # 23, 24 fingers
)  # fmt: skip

# Joint limits as (low, high, natural) degrees about the joint's local x, y, z axes (Euler "xyz").
# Joints missing here do not move on their own (the root's orientation is sampled separately).
_L_HIP = ((-100, 30, -5), (-30, 30, 0), (-15, 45, 3))
_L_SHOULDER = ((-60, 60, 0), (-100, 40, -10), (-85, 60, -70))
JOINT_LIMITS = {
    1: _L_HIP, 2: (_L_HIP[0], _L_HIP[1], (-45, 15, -3)),
    4: ((0, 140, 10), (-5, 5, 0), (-5, 5, 0)), 5: ((0, 140, 10), (-5, 5, 0), (-5, 5, 0)),
    7: ((-30, 40, 0), (-10, 10, 0), (-15, 15, 0)), 8: ((-30, 40, 0), (-10, 10, 0), (-15, 15, 0)),
    10: ((-20, 20, 0), (0, 0, 0), (0, 0, 0)), 11: ((-20, 20, 0), (0, 0, 0), (0, 0, 0)),
    3: ((-10, 25, 3), (-15, 15, 0), (-10, 10, 0)), 6: ((-10, 25, 3), (-15, 15, 0), (-10, 10, 0)),
    9: ((-10, 25, 3), (-15, 15, 0), (-10, 10, 0)),
    12: ((-20, 30, 0), (-30, 30, 0), (-15, 15, 0)), 15: ((-20, 20, 0), (-30, 30, 0), (-10, 10, 0)),
    13: ((-10, 10, 0), (-10, 10, 0), (-10, 10, 0)), 14: ((-10, 10, 0), (-10, 10, 0), (-10, 10, 0)),
    16: _L_SHOULDER, 17: (_L_SHOULDER[0], (-40, 100, 10), (-60, 85, 70)),
    18: ((-30, 30, 0), (-145, 0, -20), (-10, 10, 0)), 19: ((-30, 30, 0), (0, 145, 20), (-10, 10, 0)),
    20: ((-40, 40, 0), (-30, 30, 0), (-40, 40, 0)), 21: ((-40, 40, 0), (-30, 30, 0), (-40, 40, 0)),
    22: ((0, 0, 0), (0, 0, 0), (-30, 30, 0)), 23: ((0, 0, 0), (0, 0, 0), (-30, 30, 0)),
}  # fmt: skip


def body_dimensions(betas, gender):
    """Scales the rest skeleton and part thickness from the first two SMPL-like shape coefficients."""
    height_scale = float(np.clip(1.0 + 0.05 * betas[0], 0.85, 1.15)) * (0.94 if gender == 0 else 1.0)
    girth_scale = float(np.clip(1.0 + 0.12 * betas[1], 0.75, 1.4))
    return REST_OFFSETS * height_scale, height_scale, girth_scale


def part_ellipsoids(offsets, height_scale, girth_scale):
    """Per part: (centre [3], axes [3, 3] as columns, radii [3]) in the frame of its joint, rest pose."""
    parts = []
    for kind, where, size in PART_GEOMETRY:
        if kind == "blob":
            parts.append((np.array(where) * height_scale, np.eye(3), np.array(size) * girth_scale))
            continue
        end = offsets[where] if isinstance(where, int) else np.array(where) * height_scale
        length = np.linalg.norm(end)
        axis = end / length
        helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        side = np.cross(axis, helper)
        side /= np.linalg.norm(side)
        axes = np.stack([axis, side, np.cross(axis, side)], axis=1)
        radius = size * girth_scale
        parts.append((end / 2, axes, np.array([length / 2 + 0.4 * radius, radius, radius])))
    return parts


def sample_motion(rng, num_frames):
    """Smooth joint rotations within the limits: [T, 24, 3] Euler angles (radians) in each joint's frame."""
    angles = np.zeros((num_frames, 24, 3))
    phase = np.linspace(0.0, 1.0, num_frames)[:, None]
    for joint, limits in JOINT_LIMITS.items():
        low, high, natural = np.radians(np.array(limits, float)).T
        span = high - low
        centre = np.clip(natural + rng.uniform(-0.3, 0.3, 3) * span, low, high)
        amplitude = rng.uniform(0.0, 0.3, 3) * span
        frequency = rng.uniform(0.3, 2.0, 3)
        offset = rng.uniform(0.0, 2 * np.pi, 3)
        angles[:, joint] = np.clip(centre + amplitude * np.sin(2 * np.pi * frequency * phase + offset), low, high)
    return angles


def sample_root_orientation(rng, num_frames):
    """A slowly turning, slightly leaning root: [T, 3] Euler angles (radians) about SMPL's x, y, z."""
    phase = np.linspace(0.0, 1.0, num_frames)
    lean = np.radians(rng.uniform(-10, 10, 2))
    turn = np.radians(rng.uniform(-40, 40)) * phase
    return np.stack([np.full(num_frames, lean[0]), turn, np.full(num_frames, lean[1])], axis=1)


def local_rotations(root_euler, joint_euler):
    """[T, 3] root and [T, 24, 3] joint Euler angles -> [T, 24, 3, 3] rotation matrices (joint 0 = root)."""
    euler = joint_euler.copy()
    euler[:, 0] = root_euler
    num_frames = euler.shape[0]
    return Rotation.from_euler("xyz", euler.reshape(-1, 3)).as_matrix().reshape(num_frames, 24, 3, 3)


def axis_angle(rotations):
    """[T, 24, 3, 3] -> SMPL's `pose` layout [T, 72] (axis-angle per joint)."""
    num_frames = rotations.shape[0]
    return Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_rotvec().reshape(num_frames, 72)


def forward_kinematics(offsets, rotations):
    """Rest offsets [24, 3] and local rotations [T, 24, 3, 3] -> joints [T, 24, 3] and global rotations."""
    num_frames = rotations.shape[0]
    joints = np.zeros((num_frames, 24, 3))
    global_rot = np.zeros_like(rotations)
    global_rot[:, 0] = rotations[:, 0]
    for j in range(1, 24):
        parent = PARENTS[j]
        global_rot[:, j] = global_rot[:, parent] @ rotations[:, j]
        joints[:, j] = joints[:, parent] + global_rot[:, parent] @ offsets[j]
    return joints, global_rot
