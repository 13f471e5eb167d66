"""SURREAL's conventions: frame size, camera model, joint subset, label tables.

Every constant here is taken from the dataset authors' code (see BUILD.md, "Data conventions"); the converter, the
input pipeline, the codecs and the metrics all import them from this one module so they cannot drift apart.
"""

import numpy as np

SPLITS = ("train", "val", "test")  # the folders under cmu/
FRAME_HEIGHT = 240
FRAME_WIDTH = 320

# Blender camera of the SURREAL renderer: 60 mm lens on a 32 mm sensor, 320 px wide -> f = 600 px.
INTRINSICS = np.array([[600.0, 0.0, 160.0], [0.0, 600.0, 120.0], [0.0, 0.0, 1.0]])

# World -> OpenCV camera rotation. It is a reflection (det = -1): SURREAL's images are mirror images of the SMPL body,
# which is why JOINTS_IX maps SMPL "L_*" joints to MPII "right" joints.
_R_WORLD_TO_BLENDER_CAM = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]).T
_R_BLENDER_CAM_TO_CV = np.diag([1.0, -1.0, -1.0])
WORLD_TO_CAMERA_ROTATION = _R_BLENDER_CAM_TO_CV @ _R_WORLD_TO_BLENDER_CAM

# Depth-map pixels above this are background (the renderer writes 1e10 there).
DEPTH_BACKGROUND_THRESHOLD = 1e3
DEPTH_BACKGROUND_VALUE = 1e10

# SMPL's 24 joints -> the 16-joint MPII order used by SURREAL and BodyNet (0-based).
JOINTS_IX = np.array([7, 4, 1, 2, 5, 8, 0, 6, 12, 15, 20, 18, 16, 17, 19, 21])
NUM_SMPL_JOINTS = 24
NUM_JOINTS = 16
MPII_JOINT_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)  # fmt: skip
PELVIS = 6
UPPER_NECK = 8
HEAD_TOP = 9
JOINT_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


def _flip_permutation(size, pairs):
    """Index permutation that swaps each (left, right) pair; it is its own inverse."""
    permutation = np.arange(size)
    for a, b in pairs:
        permutation[a], permutation[b] = b, a
    return permutation


JOINT_FLIP_PERMUTATION = _flip_permutation(NUM_JOINTS, JOINT_FLIP_PAIRS)

# SMPL part labels 1..24 (the value in segm_t) -> 14 parts + background (0).
SMPL_PART_NAMES = (
    "hips", "leftUpLeg", "rightUpLeg", "spine", "leftLeg", "rightLeg", "spine1", "leftFoot",
    "rightFoot", "spine2", "leftToeBase", "rightToeBase", "neck", "leftShoulder", "rightShoulder", "head",
    "leftArm", "rightArm", "leftForeArm", "rightForeArm", "leftHand", "rightHand", "leftHandIndex1", "rightHandIndex1",
)  # fmt: skip
SEGMENTATION_LUT = np.array(
    [0, 2, 12, 9, 2, 13, 10, 2, 14, 11, 2, 14, 11, 2, 2, 2, 1, 6, 3, 7, 4, 8, 5, 8, 5], np.uint8
)
PART_NAMES = (
    "background", "head", "torso", "r_upper_arm", "r_forearm", "r_hand", "l_upper_arm", "l_forearm",
    "l_hand", "r_thigh", "r_shin", "r_foot", "l_thigh", "l_shin", "l_foot",
)  # fmt: skip
NUM_PART_CLASSES = 15
PART_FLIP_PAIRS = ((3, 6), (4, 7), (5, 8), (9, 12), (10, 13), (11, 14))
PART_FLIP_PERMUTATION = _flip_permutation(NUM_PART_CLASSES, PART_FLIP_PAIRS)

# Depth quantisation (Varol et al.): 19 bins of 45 mm around the pelvis depth, plus background.
DEPTH_STEP_M = 0.045
NUM_DEPTH_BINS = 19
NUM_DEPTH_CLASSES = NUM_DEPTH_BINS + 1

# Input whitening (RGB in [0, 1]), from SURREAL's meanRgb.t7.
RGB_MEAN = (0.509977, 0.466632, 0.411412)
RGB_STD = (0.230471, 0.234697, 0.231762)


def extrinsics(cam_loc):
    """Returns (R, t) with X_cam = R @ X_world + t for a SURREAL clip's `camLoc` (3,) or (3, 1)."""
    t = -WORLD_TO_CAMERA_ROTATION @ np.ravel(cam_loc).astype(np.float64)
    return WORLD_TO_CAMERA_ROTATION, t


def world_to_camera(points_world, cam_loc):
    """[..., 3] world metres -> [..., 3] camera metres (x right, y down, z forward)."""
    rotation, t = extrinsics(cam_loc)
    return np.asarray(points_world, np.float64) @ rotation.T + t


def camera_to_world(points_cam, cam_loc):
    """Inverse of `world_to_camera` (R is orthogonal)."""
    rotation, t = extrinsics(cam_loc)
    return (np.asarray(points_cam, np.float64) - t) @ rotation


def project(points_cam, intrinsics=INTRINSICS):
    """[..., 3] camera metres -> [..., 2] pixel coordinates (0-based, not rounded)."""
    homogeneous = np.asarray(points_cam, np.float64) @ np.asarray(intrinsics).T
    return homogeneous[..., :2] / homogeneous[..., 2:3]
