"""Metric golden values from the fixtures' known answers (../shared/fixtures/README.md)."""

import cv2
import numpy as np
import pytest
import scipy.io

from mtha_tf import metrics


def test_pckh_on_mpii_validation_reproduces_the_published_numbers(real_fixtures):
    data = scipy.io.loadmat(real_fixtures / "mpii" / "detections_our_format.mat")
    pred = data["pos_pred_src"].transpose(2, 0, 1)
    gt = data["pos_gt_src"].transpose(2, 0, 1)
    visible = (1 - data["jnt_missing"]).T.astype(bool)
    head = 0.6 * np.linalg.norm(data["headboxes_src"][1] - data["headboxes_src"][0], axis=0)
    per_joint = metrics.pckh(pred, gt, head, visible)
    pairs = {"Head": [9], "Shoulder": [12, 13], "Elbow": [11, 14], "Wrist": [10, 15], "Hip": [2, 3], "Knee": [1, 4],
             "Ankle": [0, 5]}  # fmt: skip
    published = {"Head": 95.60, "Shoulder": 92.71, "Elbow": 83.36, "Wrist": 76.74, "Hip": 81.93, "Knee": 73.36,
                 "Ankle": 65.45}  # fmt: skip
    for name, joints in pairs.items():
        assert np.mean(per_joint[joints]) == pytest.approx(published[name], abs=0.005), name
    assert metrics.pckh_mean(per_joint, visible) == pytest.approx(82.34, abs=0.005)


@pytest.mark.parametrize(
    "index, accuracy, foreground_iou, mean_iou", [(1, 0.876, 0.778, 0.474), (2, 0.925, 0.811, 0.445)]
)
def test_segmentation_on_the_authors_predictions(real_fixtures, index, accuracy, foreground_iou, mean_iou):
    pred = scipy.io.loadmat(real_fixtures / "surreal" / f"demo_segm{index}_pred.mat")["x"] - 1  # Lua 1-based
    gt = cv2.imread(str(real_fixtures / "surreal" / f"demo_segm{index}_gt_labels.png"), cv2.IMREAD_UNCHANGED)[None]
    summary = metrics.segmentation_summary(metrics.confusion(pred, gt, 15))
    assert summary["pixel_accuracy"] == pytest.approx(accuracy, abs=5e-4)
    assert np.nanmean(metrics.segmentation_iou(pred, gt)) == pytest.approx(mean_iou, abs=5e-4)
    assert metrics.segmentation_iou(pred > 0, gt > 0, num_classes=2)[1] == pytest.approx(foreground_iou, abs=5e-4)


def test_segmentation_iou_accumulates_over_images_not_per_image():
    gt = np.array([[[1, 1], [0, 0]], [[1, 0], [0, 0]]])
    pred = np.array([[[1, 0], [0, 0]], [[1, 1], [1, 1]]])
    iou = metrics.segmentation_iou(pred, gt, num_classes=2)
    assert iou[1] == pytest.approx(2 / 6)  # intersections 1 + 1, unions 2 + 4


def test_mean_joint_distance_on_bodynets_prediction(real_fixtures):
    data = scipy.io.loadmat(real_fixtures / "surreal" / "joints3D_233.mat")
    per_joint = metrics.mean_joint_distance_mm(data["pred"][None], data["gt"][None])
    assert per_joint.shape == (16,) and per_joint[6] == 0.0
    assert per_joint.mean() == pytest.approx(40.46, abs=0.005)
    assert np.delete(per_joint, 6).mean() == pytest.approx(43.15, abs=0.005)


def test_depth_rmse_counts_foreground_predicted_as_background():
    gt = np.array([[[10, 11], [0, 0]]])
    pred = np.array([[[10, 0], [5, 0]]])
    np.testing.assert_allclose(metrics.depth_rmse_bins(pred, gt), [np.sqrt(121 / 2)])
    parts = np.array([[[1, 2], [0, 0]]])
    per_part = metrics.depth_rmse_per_part(pred, gt, parts)
    assert per_part[1] == 0.0 and per_part[2] == 11.0 and np.isnan(per_part[3])
    assert per_part[0] == pytest.approx(np.sqrt(25 / 2)), "background: a pixel predicted as bin k counts k"


def test_newell_pck_and_success_rate():
    gt = np.tile(np.array([[10.0, 10.0]]), (2, 16, 1))
    pred = gt + np.array([3.0, 0.0])
    pred[1] += 1.0
    per_joint, mean = metrics.newell_pck(pred, gt)
    assert mean == 50.0 and per_joint[0] == 50.0  # 3 px <= 3.2, sqrt(17) px > 3.2
    np.testing.assert_allclose(metrics.success_rate([10, 20, 30], [5, 20, 40]), [0, 2 / 3, 1])


def test_the_union_depth_rmse_counts_what_the_reference_metric_ignores():
    gt = np.zeros((1, 4, 4), int)
    gt[0, 1:3, 1:3] = 10
    everywhere = np.full((1, 4, 4), 10)  # one bin painted over the whole crop
    assert metrics.depth_rmse_bins(everywhere, gt)[0] == 0.0, "the reference metric only looks at GT foreground"
    assert metrics.depth_rmse_bins_union(everywhere, gt)[0] == pytest.approx(np.sqrt(12 * 100 / 16))
    assert metrics.foreground_iou(everywhere, gt) == pytest.approx(4 / 16)
    exact = gt.copy()
    assert metrics.depth_rmse_bins_union(exact, gt)[0] == 0.0 and metrics.foreground_iou(exact, gt) == 1.0


def test_per_image_part_errors_sum_to_the_pooled_ones():
    """A part's success-rate curve (paper Fig. 3) takes its error in each frame; summed over frames the same counts give
    the table's pooled figure."""
    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 20, (3, 8, 8)), rng.integers(0, 20, (3, 8, 8))
    parts = rng.integers(0, 15, (3, 8, 8))
    parts[1][parts[1] == 4] = 0  # part 4 absent from the second image
    per_image = metrics.depth_squared_errors_per_part(pred, gt, parts)
    assert per_image.shape == (3, 15, 2)
    np.testing.assert_allclose(metrics.rmse_from_squared_errors(per_image.sum(axis=0)),
                               metrics.depth_rmse_per_part(pred, gt, parts))  # fmt: skip
    for image in range(3):
        np.testing.assert_allclose(metrics.rmse_from_squared_errors(per_image[image]),
                                   metrics.depth_rmse_per_part(pred[image:image + 1], gt[image:image + 1],
                                                               parts[image:image + 1]))  # fmt: skip
    assert np.isnan(metrics.rmse_from_squared_errors(per_image)[1, 4])


def test_pixel_error_per_class_is_one_minus_each_frames_part_recall():
    gt = np.array([[[1, 1], [0, 2]], [[0, 0], [0, 1]]])
    pred = np.array([[[1, 0], [0, 0]], [[0, 0], [1, 1]]])
    errors = metrics.pixel_error_per_class(pred, gt, num_classes=3)
    np.testing.assert_allclose(errors, [[0.0, 0.5, 1.0], [1 / 3, 0.0, np.nan]])
    # Pooled over both images, the per-part pixel accuracy (paper Fig. 4(b)).
    recall = metrics.segmentation_summary(metrics.confusion(pred, gt, 3))["recall_per_class"]
    np.testing.assert_allclose(recall, [3 / 4, 2 / 3, 0.0])


def test_joint_distances_per_frame_average_to_the_mean_joint_distance(real_fixtures):
    data = scipy.io.loadmat(real_fixtures / "surreal" / "joints3D_233.mat")
    pred, gt = np.stack([data["pred"], data["gt"]]), np.stack([data["gt"], data["gt"]])
    distances = metrics.joint_distances_mm(pred, gt)
    assert distances.shape == (2, 16) and not distances[1].any()
    assert distances[0].mean() == pytest.approx(40.46, abs=0.005)
    np.testing.assert_allclose(metrics.mean_joint_distance_mm(pred, gt), distances.mean(axis=0))
