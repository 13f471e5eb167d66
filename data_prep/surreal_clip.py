"""Reading one SURREAL clip from disk, with every check the converter needs.

A clip is `<root>/cmu/<split>/run<k>/<seq>/<seq>_c%04d` plus `.mp4`, `_info.mat`, `_segm.mat` and `_depth.mat`.
Any problem raises `ClipError` naming the file and what was expected.
"""

import dataclasses
import glob
import os

import cv2
import numpy as np
import scipy.io

from mtha_tf import surreal

MODALITIES = {"mp4": ".mp4", "info": "_info.mat", "segm": "_segm.mat", "depth": "_depth.mat"}
_INFO_SHAPES = {"joints2D": (2, 24, None), "joints3D": (3, 24, None), "camLoc": (3, 1), "zrot": (None, 1)}


class ClipError(Exception):
    """A clip that cannot be converted: `path` is the offending file, `reason` what was wrong."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Clip:
    """`name` is the clip's path relative to `cmu/`, e.g. "train/run0/01_01/01_01_c0001"."""

    name: str
    base: str

    def path(self, modality):
        return self.base + MODALITIES[modality]


def find_clips(root, split):
    """All clips of a split, sorted by name; a clip is listed if any of its four files is present."""
    split_dir = os.path.join(root, "cmu", split)
    bases = set()
    for suffix in MODALITIES.values():
        for path in glob.glob(os.path.join(split_dir, "run*", "*", "*_c[0-9][0-9][0-9][0-9]" + suffix)):
            bases.add(path[: -len(suffix)])
    cmu = os.path.join(root, "cmu")
    return [Clip(os.path.relpath(base, cmu), base) for base in sorted(bases)]


def _loadmat(path, **kwargs):
    if not os.path.exists(path):
        raise ClipError(path, "missing file")
    try:
        return scipy.io.loadmat(path, **kwargs)
    except Exception as error:  # scipy raises several types for truncated or corrupt files
        raise ClipError(path, f"unreadable MATLAB file ({type(error).__name__}: {error})") from error


def load_info(clip):
    """The `_info.mat` fields the converter uses, validated; returns (info dict, number of frames T)."""
    path = clip.path("info")
    info = _loadmat(path)
    if "zrot" not in info:
        raise ClipError(path, "field 'zrot' missing (it gives the clip length T)")
    num_frames = info["zrot"].size
    for key, shape in _INFO_SHAPES.items():
        if key not in info:
            raise ClipError(path, f"field {key!r} missing")
        expected = tuple(num_frames if s is None else s for s in shape)
        if info[key].shape != expected:
            raise ClipError(path, f"field {key!r} has shape {info[key].shape}, expected {expected}")
        if not np.all(np.isfinite(info[key])):
            raise ClipError(path, f"field {key!r} contains NaN or infinite values")
    return info, num_frames


def read_video(clip, num_frames):
    """All frames of the `.mp4` as RGB uint8 [T, 240, 320, 3]; the count must match `_info.mat`."""
    path = clip.path("mp4")
    if not os.path.exists(path):
        raise ClipError(path, "missing file")
    capture = cv2.VideoCapture(path)
    frames = []
    while capture.isOpened():
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    if len(frames) != num_frames:
        raise ClipError(path, f"decoded {len(frames)} frames, _info.mat says {num_frames}")
    expected = (surreal.FRAME_HEIGHT, surreal.FRAME_WIDTH, 3)
    if frames[0].shape != expected:
        raise ClipError(path, f"frames are {frames[0].shape}, expected {expected}")
    return np.stack(frames)


def load_frames(clip, modality, frames, num_frames):
    """`segm_t` / `depth_t` arrays (keys are 1-based) for the 0-based `frames`; checks the file holds T frames."""
    path = clip.path(modality)
    keys = [f"{modality}_{t + 1}" for t in frames]
    last, beyond = f"{modality}_{num_frames}", f"{modality}_{num_frames + 1}"
    table = _loadmat(path, variable_names=keys + [last, beyond])
    if last not in table or beyond in table:
        found = len(scipy.io.whosmat(path))
        raise ClipError(path, f"holds {found} frames, _info.mat says {num_frames}")
    arrays = []
    for key in keys:
        array = table[key]
        if array.shape != (surreal.FRAME_HEIGHT, surreal.FRAME_WIDTH):
            raise ClipError(path, f"{key} has shape {array.shape}, expected (240, 320)")
        if modality == "segm" and (array.dtype != np.uint8 or array.max() > 24):
            raise ClipError(path, f"{key} must be uint8 labels 0..24, got {array.dtype} max {array.max()}")
        if modality == "depth" and np.isnan(array).any():
            raise ClipError(path, f"{key} contains NaN")
        arrays.append(array)
    return arrays


def skip_reason(joints2d, joints3d_world):
    """Why the SURREAL loaders would skip a frame (None if they would not)."""
    if np.all(joints2d == np.array([0.0, 238.0])):
        return "invalid 2D joints"
    if np.all(joints3d_world == 0):
        return "invalid 3D joints"
    from mtha_tf.data import crop  # TensorFlow: here, so that only the converting workers start it

    center, _ = crop.person_center_scale(joints2d)  # the same box the training crops use
    center = center.numpy()
    if not (0 <= center[0] < surreal.FRAME_WIDTH and 0 <= center[1] < surreal.FRAME_HEIGHT):
        return "person outside the image"
    return None
