"""Pictures of predictions for a person to look at: skeletons, part maps, depth maps (numpy + OpenCV, RGB uint8)."""

import cv2
import numpy as np

from mtha_tf import atomic_files, surreal

SKELETON = ((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11), (11, 12), (12, 7),
            (7, 13), (13, 14), (14, 15))  # fmt: skip
_RIGHT = {0, 1, 2, 10, 11, 12}
PART_COLOURS = np.array(
    [[0, 0, 0], [255, 220, 120], [70, 110, 200], [230, 60, 60], [240, 130, 40], [250, 200, 60], [60, 180, 75],
     [40, 200, 170], [150, 230, 90], [200, 40, 140], [170, 60, 220], [255, 120, 200], [40, 120, 255],
     [100, 200, 255], [180, 180, 255]], np.uint8)  # fmt: skip


def write_image(path, rgb):
    """Writes an RGB uint8 picture, in the format its extension names, under a temporary name, then renames it."""
    with atomic_files.replacing(path) as partial:
        try:
            written = cv2.imwrite(partial, np.ascontiguousarray(rgb[..., ::-1]))
        except cv2.error as error:  # no encoder for the extension
            raise ValueError(f"{path}: expected an image file name OpenCV can write (.png, .jpg, ...)") from error
        if not written:
            raise OSError(f"{path}: could not be written (does its folder exist?)")
    return path


def denormalise(image):
    """A whitened network input [H, W, 3] -> RGB uint8."""
    rgb = np.asarray(image) * np.array(surreal.RGB_STD) + np.array(surreal.RGB_MEAN)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def draw_skeleton(rgb, joints, scale=1.0, thickness=2):
    """Draws the 16 MPII joints [16, 2] (in pixels of `rgb` / scale) onto a copy; right limbs red, left blue."""
    out = np.ascontiguousarray(rgb).copy()
    points = [tuple(int(round(v)) for v in np.asarray(p) * scale) for p in joints]
    for a, b in SKELETON:
        colour = (230, 50, 50) if a in _RIGHT and b in _RIGHT else (50, 90, 230) if a >= 3 and b >= 3 else (240, 220, 0)
        cv2.line(out, points[a], points[b], colour, thickness, cv2.LINE_AA)
    for point in points:
        cv2.circle(out, point, thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def colour_parts(labels):
    """Part classes [H, W] 0..14 -> RGB."""
    return PART_COLOURS[np.clip(np.asarray(labels), 0, len(PART_COLOURS) - 1)]


def colour_depth(labels):
    """Depth labels [H, W] 0..19 (0 background) -> RGB, near = warm, far = cool, background black."""
    labels = np.asarray(labels)
    scaled = (255 * (surreal.NUM_DEPTH_CLASSES - 1 - labels) / (surreal.NUM_DEPTH_CLASSES - 2)).clip(0, 255)
    rgb = cv2.applyColorMap(scaled.astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    return np.where(labels[..., None] > 0, rgb, 0).astype(np.uint8)


def upscale(image, size):
    return cv2.resize(np.asarray(image), (size, size), interpolation=cv2.INTER_NEAREST)


def prediction_row(image, joints_grid=None, parts=None, depth=None, heatmap_size=64):
    """One row: input with the predicted skeleton, part map, depth map (each at the input size), side by side."""
    rgb = denormalise(image)
    size = rgb.shape[0]
    panels = [draw_skeleton(rgb, joints_grid, scale=size / heatmap_size) if joints_grid is not None else rgb]
    if parts is not None:
        panels.append(upscale(colour_parts(parts), size))
    if depth is not None:
        panels.append(upscale(colour_depth(depth), size))
    return np.concatenate(panels, axis=1)


def prediction_rows(images, outputs, codecs):
    """`prediction_row` for each whitened input of a batch [N, S, S, 3], from the network's `outputs` decoded with
    the training `codecs` (`targets.make_codecs(S // 4)`); panels of tasks the network lacks are left out."""
    joints = codecs["pose2d"].decode(outputs["pose2d"])[0].numpy() if "pose2d" in outputs else None
    parts = codecs["segmentation"].decode(outputs["segmentation"]).numpy() if "segmentation" in outputs else None
    depth = codecs["depth"].decode(outputs["depth"])[0].numpy() if "depth" in outputs else None
    images = np.asarray(images)
    return [
        prediction_row(
            images[i],
            None if joints is None else joints[i],
            None if parts is None else parts[i],
            None if depth is None else depth[i],
            heatmap_size=images.shape[1] // 4,
        )
        for i in range(len(images))
    ]


def skeleton_3d(joints_mm, size, extent_mm=1200.0):
    """A pelvis-relative 3D skeleton [16, 3] mm drawn from the side (depth to the right, up is up) on black."""
    canvas = np.zeros((size, size, 3), np.uint8)
    side = np.stack([np.asarray(joints_mm)[:, 2], np.asarray(joints_mm)[:, 1]], axis=-1)
    points = side * (size / extent_mm) + size / 2
    cv2.putText(canvas, "3D, side view", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1, cv2.LINE_AA)
    return draw_skeleton(canvas, points, thickness=1)
