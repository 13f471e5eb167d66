"""SURREAL's camera model and joint conventions, checked on the dataset's real `_info.mat` files."""

import numpy as np
import pytest
import scipy.io

from mtha_tf import surreal

INFO_FILES = ("01_01_c0001_info.mat", "40_02_c0010_info.mat")


@pytest.mark.parametrize("name", INFO_FILES)
def test_real_joints3d_reproject_exactly_onto_joints2d(real_fixtures, name):
    info = scipy.io.loadmat(real_fixtures / "surreal" / name)
    joints3d = info["joints3D"].transpose(2, 1, 0)  # [T, 24, 3]
    camera = surreal.world_to_camera(joints3d, info["camLoc"])
    pixels = np.round(surreal.project(camera))
    np.testing.assert_array_equal(pixels, info["joints2D"].transpose(2, 1, 0))
    assert np.all(camera[..., 2] > 4.0), "people stand several metres in front of the camera"


def test_bodynet_ground_truth_matches_camera_model_and_joint_subset(real_fixtures):
    info = scipy.io.loadmat(real_fixtures / "surreal" / "40_02_c0010_info.mat")
    stored = scipy.io.loadmat(real_fixtures / "surreal" / "joints3D_233.mat")["gt"]
    joints = surreal.world_to_camera(info["joints3D"][:, surreal.JOINTS_IX, 49].T, info["camLoc"])
    np.testing.assert_allclose(joints - joints[surreal.PELVIS], stored, atol=1e-6)


def _mirror_sign(joints_smpl_cam):
    """Sign of (L_Hip - R_Hip) x (Neck - Pelvis) . toe direction in camera coordinates, per frame."""
    j = joints_smpl_cam
    cross = np.cross(j[..., 1, :] - j[..., 2, :], j[..., 12, :] - j[..., 0, :])
    toes = (j[..., 10, :] + j[..., 11, :]) / 2 - (j[..., 7, :] + j[..., 8, :]) / 2
    return np.sign(np.einsum("...i,...i", cross, toes))


@pytest.mark.parametrize("name", INFO_FILES)
def test_real_images_are_mirrored_bodies(real_fixtures, name):
    info = scipy.io.loadmat(real_fixtures / "surreal" / name)
    camera = surreal.world_to_camera(info["joints3D"].transpose(2, 1, 0), info["camLoc"])
    assert np.all(_mirror_sign(camera) < 0)


def test_synthetic_clips_have_surreals_handedness(synthetic_root):
    for path in sorted(synthetic_root.glob("cmu/*/run0/*/*_info.mat")):
        info = scipy.io.loadmat(path)
        camera = surreal.world_to_camera(info["joints3D"].transpose(2, 1, 0), info["camLoc"])
        assert np.all(_mirror_sign(camera) < 0), path


def test_world_camera_round_trip():
    rng = np.random.default_rng(0)
    points, cam_loc = rng.normal(size=(5, 3)), rng.normal(size=3)
    np.testing.assert_allclose(surreal.camera_to_world(surreal.world_to_camera(points, cam_loc), cam_loc), points)
    assert np.isclose(np.linalg.det(surreal.WORLD_TO_CAMERA_ROTATION), -1.0)
