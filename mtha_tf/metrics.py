"""The paper's metrics, as the reference code computes them (pure numpy; shapes in each docstring).

2D pose: PCKh (MPII rule) and Newell's heatmap PCK; segmentation: IoU accumulated over the dataset; depth: RMSE in
bins over ground-truth foreground pixels; 3D pose: mean joint distance after aligning the pelvis. Per-part values
give the rows of the paper's Tables I-IV.
"""

import numpy as np

from mtha_tf import surreal

# MPII's summary leaves out pelvis and thorax.
PCKH_JOINTS = np.array([j for j in range(surreal.NUM_JOINTS) if j not in (surreal.PELVIS, 7)])
# Newell's training PCK: ankles, knees, hips, wrists, elbows (pose-hg-train's accIdxs, 0-based).
NEWELL_PCK_JOINTS = np.array([0, 1, 2, 3, 4, 5, 10, 11, 14, 15])


def pckh(pred, gt, head_size, visible, threshold=0.5):
    """Per-joint PCKh in percent [K]: pred, gt [N, K, 2] px; head_size [N] px; visible [N, K] bool.

    A visible joint is correct if its distance divided by the head size is <= threshold; joints never visible
    give NaN. MPII: head_size = 0.6 x head-box diagonal. SURREAL has no head box: this project uses the head-top to
    upper-neck distance in original pixels (the paper's "50 % of the head length").
    """
    distance = np.linalg.norm(np.asarray(pred, float) - np.asarray(gt, float), axis=-1)
    correct = (distance / np.asarray(head_size, float)[:, None] <= threshold) & visible
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * correct.sum(axis=0) / np.asarray(visible).sum(axis=0)


def pckh_mean(per_joint, visible):
    """MPII's mean: the per-joint PCKh averaged over the 14 joints without pelvis and thorax, weighted by how many
    times each joint is visible."""
    counts = np.asarray(visible).sum(axis=0)[PCKH_JOINTS].astype(float)
    return float(np.sum(np.nan_to_num(per_joint[PCKH_JOINTS]) * counts) / counts.sum())


def newell_pck(pred, gt, heatmap_size=64, threshold=0.5):
    """Newell's PCK in percent (BodyNet's logged "PCK"): pred, gt [N, K, 2] heatmap px.

    Distances are divided by heatmap_size / 10; joints whose ground truth lies at x <= 0 or y <= 0 are ignored;
    the value averages the joints of NEWELL_PCK_JOINTS. Returns (per-joint [K], mean).
    """
    gt = np.asarray(gt, float)
    valid = (gt[..., 0] > 0) & (gt[..., 1] > 0)
    distance = np.linalg.norm(np.asarray(pred, float) - gt, axis=-1) / (heatmap_size / 10.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = 100.0 * ((distance <= threshold) & valid).sum(axis=0) / valid.sum(axis=0)
    return per_joint, float(np.nanmean(per_joint[NEWELL_PCK_JOINTS]))


def confusion(pred, gt, num_classes):
    """[C, C] pixel counts (row = ground truth, column = prediction) over all images: pred, gt int [N, H, W]."""
    index = np.asarray(gt, np.int64).ravel() * num_classes + np.asarray(pred, np.int64).ravel()
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(matrix):
    """Per-class IoU [C] = sum of intersections / sum of unions; NaN for a class absent from both."""
    intersection = np.diag(matrix).astype(float)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return intersection / union


def segmentation_iou(pred, gt, num_classes=surreal.NUM_PART_CLASSES):
    """Per-class IoU [C] accumulated over all pixels of all N images: pred, gt int [N, H, W]."""
    return iou_from_confusion(confusion(pred, gt, num_classes))


def segmentation_summary(matrix):
    """SURREAL's figures from a confusion matrix: mean IoU over the 14 parts and over all 15 classes, pixel accuracy
    (all pixels), mean per-part recall (SURREAL's "pixel accuracy"), and per class the IoU and the recall (the paper's
    per-part pixel accuracy, Fig. 4(b))."""
    iou = iou_from_confusion(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(matrix) / matrix.sum(axis=1)
    return {
        "iou_per_class": iou,
        "recall_per_class": recall,
        "mean_iou_parts": float(np.nanmean(iou[1:])),
        "mean_iou_all": float(np.nanmean(iou)),
        "pixel_accuracy": float(np.trace(matrix) / matrix.sum()),
        "mean_part_recall": float(np.nanmean(recall[1:])),
    }


def _sums_per_image_and_class(classes, values, counted, num_classes):
    """([N, C] sums of `values`, [N, C] pixel counts) over the `counted` pixels of each class per image; classes,
    values, counted [N, H, W]. One bincount over image * C + class, so a batch is not looped over."""
    classes = np.asarray(classes, np.int64)
    index = (np.arange(len(classes))[:, None, None] * num_classes + classes)[counted]
    size = len(classes) * num_classes
    sums = np.bincount(index, weights=np.asarray(values, float)[counted], minlength=size)
    return sums.reshape(-1, num_classes), np.bincount(index, minlength=size).reshape(-1, num_classes)


def pixel_error_per_class(pred, gt, num_classes=surreal.NUM_PART_CLASSES):
    """[N, C]: per image, the fraction of each ground-truth class's pixels labelled otherwise (NaN for a class absent
    from the image): a part's per-frame error for its success-rate curve (paper Fig. 3). pred, gt int [N, H, W]."""
    gt = np.asarray(gt, np.int64)
    wrong, pixels = _sums_per_image_and_class(gt, np.asarray(pred) != gt, np.ones(gt.shape, bool), num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wrong / pixels


def depth_rmse_bins(pred, gt):
    """Per-image RMSE in bins over ground-truth foreground pixels [N] (NaN for an image without foreground).

    pred, gt int [N, H, W] labels 0..19 (0 = background); a foreground pixel predicted as background counts with
    its label 0, as in the reference code. Multiply by 45 for millimetres.
    """
    pred, gt = np.asarray(pred, float), np.asarray(gt, float)
    foreground = gt > 0
    squared = np.where(foreground, (pred - gt) ** 2, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(squared / foreground.sum(axis=(1, 2)))


def depth_rmse_bins_union(pred, gt):
    """Per-image RMSE in bins over the union of ground-truth and predicted foreground [N].

    Not in the reference code: its metric ignores pixels wrongly predicted as foreground, so a network that paints
    one bin over the whole crop (an untrained one often does) scores about as well as the paper's (4.4 bins). Here
    a background pixel predicted as bin k counts k, as a foreground pixel predicted as background counts its bin.
    """
    pred, gt = np.asarray(pred, float), np.asarray(gt, float)
    union = (gt > 0) | (pred > 0)
    squared = np.where(union, (pred - gt) ** 2, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(squared / union.sum(axis=(1, 2)))


def foreground_counts(pred, gt):
    """[intersection, union] pixel counts of the predicted and ground-truth foreground (label > 0) of N images: sums
    over batches give the IoU of a whole split (`iou_from_counts`) without keeping its label maps."""
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    return np.array([(pred & gt).sum(), (pred | gt).sum()], np.int64)


def iou_from_counts(counts):
    """Intersection / union from `foreground_counts`; NaN for no foreground at all."""
    intersection, union = counts
    return float(intersection / union) if union else float("nan")


def foreground_iou(pred, gt):
    """IoU of the predicted and ground-truth foreground (label > 0), accumulated over all N images."""
    return iou_from_counts(foreground_counts(pred, gt))


def depth_squared_errors_per_part(pred, gt, parts, num_parts=surreal.NUM_PART_CLASSES):
    """[N, num_parts, 2]: per image and ground-truth part, the sum of squared bin errors and the pixel count. Summed
    over images (and batches) they give `rmse_from_squared_errors` of a whole split without keeping its label maps;
    one image's give its per-part RMSE (a part's success-rate curve, paper Fig. 3).

    Index 0 is the background (the paper's Table IV row): its ground-truth pixels, where a pixel predicted as bin k
    counts k. The parts take their ground-truth foreground pixels, as the full-body RMSE does.
    """
    pred, gt, parts = np.asarray(pred, np.int64), np.asarray(gt, np.int64), np.asarray(parts, np.int64)
    counted = np.where(parts > 0, gt > 0, gt == 0)  # a part pixel outside the depth map's foreground counts nowhere
    return np.stack(_sums_per_image_and_class(parts, np.square(pred - gt), counted, num_parts), axis=-1)


def rmse_from_squared_errors(sums):
    """[..., num_parts] RMSE from `depth_squared_errors_per_part` [..., num_parts, 2] (one image's, or summed over
    images); NaN for a part never seen."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(sums[..., 0] / sums[..., 1])


def depth_rmse_per_part(pred, gt, parts, num_parts=surreal.NUM_PART_CLASSES):
    """RMSE in bins over the pixels of each ground-truth part [num_parts], pooled over images; NaN for a part absent
    (see `depth_squared_errors_per_part`)."""
    return rmse_from_squared_errors(depth_squared_errors_per_part(pred, gt, parts, num_parts).sum(axis=0))


def joint_distances_mm(pred, gt):
    """Per frame and joint, the distance in mm [N, K]: pred, gt [N, K, 3] metres, each aligned at its own pelvis
    first."""
    pred, gt = np.asarray(pred, float), np.asarray(gt, float)
    pred = pred - pred[:, surreal.PELVIS : surreal.PELVIS + 1]
    gt = gt - gt[:, surreal.PELVIS : surreal.PELVIS + 1]
    return 1000.0 * np.linalg.norm(pred - gt, axis=-1)


def mean_joint_distance_mm(pred, gt):
    """Per-joint mean distance in mm [K] over N frames (`joint_distances_mm`)."""
    return joint_distances_mm(pred, gt).mean(axis=0)


def success_rate(errors, thresholds):
    """Fraction of frames whose error is under each threshold (paper Fig. 3): errors [N], thresholds [M] -> [M]."""
    errors = np.asarray(errors, float)[:, None]
    return (errors <= np.asarray(thresholds, float)[None]).mean(axis=0)
