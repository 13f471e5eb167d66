"""Target codecs: encode -> decode round trips, and the 3D codec's metric floor on real SURREAL joints."""

import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from mtha_tf import surreal
from mtha_tf.data import crop
from mtha_tf.targets.labels import DepthCodec, SegmentationCodec
from mtha_tf.targets.pose2d import Pose2DCodec
from mtha_tf.targets.pose3d import Pose3DCodec


def test_pose2d_heatmaps_are_newells_and_decode_back():
    codec = Pose2DCodec()
    joints = np.random.default_rng(0).uniform(4, 59, (16, 2)).astype(np.float32)
    visible = np.arange(16) != 3
    heatmaps = codec.encode(joints, visible).numpy()
    assert heatmaps.shape == (64, 64, 16)
    x, y = np.round(joints[0]).astype(int)
    assert heatmaps[y, x, 0] == 1.0 and np.isclose(heatmaps[y, x + 1, 0], np.exp(-1 / (2 * 1.75**2)))
    assert heatmaps[y, x + 4, 0] == 0.0, "7x7 window"
    assert np.count_nonzero(heatmaps[..., 0]) == 49 and not heatmaps[..., 3].any()
    decoded, confidence = codec.decode(heatmaps[None])
    np.testing.assert_array_equal(decoded[0].numpy()[visible], np.round(joints)[visible])
    assert np.all(confidence[0].numpy()[visible] == 1.0) and confidence[0, 3] == 0.0


def test_pose2d_decode_shifts_a_quarter_pixel_toward_the_higher_neighbour():
    heatmap = np.zeros((1, 64, 64, 16), np.float32)
    heatmap[0, 20, 30, :] = 1.0
    heatmap[0, 20, 31, :] = 0.5  # right neighbour higher than the left
    heatmap[0, 19, 30, :] = 0.4  # upper neighbour higher than the lower
    joints, _ = Pose2DCodec().decode(heatmap)
    np.testing.assert_allclose(joints[0, 0], [30.25, 19.75])


def test_segmentation_uses_surreals_table_and_flips_left_right():
    codec = SegmentationCodec()
    smpl = np.arange(25, dtype=np.uint8).reshape(5, 5)
    classes = codec.encode(smpl).numpy()
    np.testing.assert_array_equal(classes.ravel(), surreal.SEGMENTATION_LUT)
    assert classes[0, 0] == 0 and classes.ravel()[16] == 1  # background stays 0; SMPL "head" is class 1
    flipped = codec.encode(smpl, flip=True).numpy().ravel()
    assert flipped[18] == 6 and flipped[17] == 3, "right upper arm <-> left upper arm"
    np.testing.assert_array_equal(codec.decode(tf.one_hot(classes, 15)).numpy(), classes)


def test_depth_bins_follow_varols_formula_and_decode_to_bin_centres():
    codec = DepthCodec()
    pelvis = 6.5
    offsets = np.array([-1.0, -0.405, -0.046, -0.044, 0.0, 0.001, 0.044, 0.046, 0.4, 1.0], np.float32)
    depth = np.concatenate([[0.0], pelvis + offsets]).astype(np.float32)
    labels = codec.encode(depth, pelvis).numpy()
    expected = np.clip(np.ceil(offsets / 0.045), -9, 9) + 10
    np.testing.assert_array_equal(labels, np.concatenate([[0], expected]))
    assert labels[5] == 10, "the pelvis depth is bin 10"
    decoded, metres = codec.decode(tf.one_hot(labels, 20))
    np.testing.assert_array_equal(decoded.numpy(), labels)
    inside = np.abs(offsets) < 0.4
    assert np.all(np.abs(metres.numpy()[1:][inside] - offsets[inside]) <= 0.0225 + 1e-6)
    assert metres.numpy()[0] == 0.0


def test_pose3d_volume_round_trip():
    codec = Pose3DCodec()
    rng = np.random.default_rng(1)
    joints = rng.integers(4, 60, (16, 2)).astype(np.float32)
    joints3d = np.c_[rng.normal(0, 0.3, (16, 2)), 6.0 + rng.normal(0, 0.15, 16)].astype(np.float32)
    volume = codec.encode(joints, joints3d, np.ones(16, bool)).numpy()
    assert volume.shape == (64, 64, 304) and volume.max() == 1.0
    bins = codec.z_bins(joints3d).numpy()
    assert bins[surreal.PELVIS] == 10
    for j in (0, 6, 15):
        x, y = joints[j].astype(int)
        assert volume[y, x, j * 19 + bins[j] - 1] == 1.0, "channel = joint * 19 + (bin - 1)"
    decoded, decoded_bins, _ = codec.decode(volume[None])
    np.testing.assert_array_equal(decoded[0].numpy(), joints)
    np.testing.assert_array_equal(decoded_bins[0].numpy(), bins)


def _quantisation_floor_mm(info, flip_depth_sign=False):
    codec = Pose3DCodec()
    errors = []
    for t in range(0, info["zrot"].size, 3):
        joints2d = info["joints2D"][:, surreal.JOINTS_IX, t].T.astype(np.float32)
        joints3d = surreal.world_to_camera(info["joints3D"][:, surreal.JOINTS_IX, t].T, info["camLoc"])
        centre, scale = crop.person_center_scale(joints2d)
        matrix = crop.crop_matrix(centre, scale, 64)
        volume = codec.encode(crop.transform_points(matrix, joints2d), joints3d.astype(np.float32), np.ones(16, bool))
        xy, bins, _ = codec.decode(volume[None])
        if flip_depth_sign:
            bins = 20 - bins
        frame_xy = crop.transform_points(tf.linalg.inv(matrix), xy[0])[None]
        intrinsics = tf.constant(surreal.INTRINSICS[None], tf.float32)
        predicted = codec.lift(frame_xy, bins, tf.constant([joints3d[surreal.PELVIS, 2]], tf.float32), intrinsics)
        truth = 1000 * (joints3d - joints3d[surreal.PELVIS])
        errors.append(np.linalg.norm(predicted[0].numpy() - truth, axis=-1).mean())
    return float(np.mean(errors))


@pytest.mark.parametrize("name", ["01_01_c0001", "40_02_c0010"])
def test_pose3d_decode_is_metric_on_real_surreal_joints(real_fixtures, name):
    """Ground truth -> volume -> decode reproduces BodyNet's PE_min floor (18-21 mm a clip in its logs)."""
    info = scipy.io.loadmat(real_fixtures / "surreal" / f"{name}_info.mat")
    floor = _quantisation_floor_mm(info)
    assert 17.0 < floor < 23.0, floor
    assert _quantisation_floor_mm(info, flip_depth_sign=True) > 150.0, "a sign error shows"
