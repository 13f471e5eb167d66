"""The TFRecord layout of one SURREAL frame: the only module that knows it.

`data_prep.surreal` writes records with `encode_example`; `mtha_tf.data` reads them with `parse_example`. A record is
lossless: the RGB frame and the raw 24-label segmentation as PNG, the depth map as zlib-compressed float32 metres
(background 0), both joint sets (16 MPII joints and the 24 SMPL joints) in pixels and in camera metres, the camera,
the SMPL parameters, and where the frame came from. Augmentation and every task's targets are made later in tf.data.
"""

import zlib

import cv2
import numpy as np
import tensorflow as tf

from mtha_tf import surreal

# Fixed-length float fields: name -> shape. Kept as one table so writer and reader share shapes.
_FLOAT_FIELDS = {
    "joints2d": (surreal.NUM_JOINTS, 2),
    "joints3d": (surreal.NUM_JOINTS, 3),
    "joints2d_smpl": (surreal.NUM_SMPL_JOINTS, 2),
    "joints3d_smpl": (surreal.NUM_SMPL_JOINTS, 3),
    "intrinsics": (3, 3),
    "cam_loc": (3,),
    "pose": (72,),
    "shape": (10,),
    "zrot": (),
}
_INT_FIELDS = ("frame", "gender", "height", "width")
_BYTES_FIELDS = ("image_png", "segmentation_png", "depth_zlib", "clip")

FEATURE_SPEC = {
    **{name: tf.io.FixedLenFeature([int(np.prod(shape))], tf.float32) for name, shape in _FLOAT_FIELDS.items()},
    **{name: tf.io.FixedLenFeature([], tf.int64) for name in _INT_FIELDS},
    **{name: tf.io.FixedLenFeature([], tf.string) for name in _BYTES_FIELDS},
}


def _float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))


def _int_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _png(array):
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {array.shape}")
    return buffer.tobytes()


def encode_example(frame):
    """Serialises one frame (a dict of numpy arrays, see `parse_example` for keys) to tf.train.Example bytes.

    `frame["image"]` is RGB uint8 [H, W, 3]; `frame["segmentation"]` uint8 [H, W] SMPL labels 0..24;
    `frame["depth"]` float32 [H, W] metres with background 0. Runs without TF ops, so worker processes stay light.
    """
    image = np.asarray(frame["image"], np.uint8)
    height, width = image.shape[:2]
    segmentation = np.asarray(frame["segmentation"], np.uint8)
    depth = np.ascontiguousarray(frame["depth"], np.float32)
    if segmentation.shape != (height, width) or depth.shape != (height, width):
        raise ValueError(
            f"image {image.shape}, segmentation {segmentation.shape} and depth {depth.shape} must share [H, W]"
        )
    features = {
        "image_png": _bytes_feature(_png(image[..., ::-1])),  # cv2 writes BGR
        "segmentation_png": _bytes_feature(_png(segmentation)),
        "depth_zlib": _bytes_feature(zlib.compress(depth.tobytes(), 1)),
        "clip": _bytes_feature(str(frame["clip"]).encode()),
        "height": _int_feature(height),
        "width": _int_feature(width),
        "frame": _int_feature(frame["frame"]),
        "gender": _int_feature(frame["gender"]),
    }
    for name, shape in _FLOAT_FIELDS.items():
        values = np.asarray(frame[name], np.float32)
        if values.size != int(np.prod(shape)):
            raise ValueError(f"field {name!r}: expected shape {shape}, got {values.shape}")
        features[name] = _float_feature(values)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def parse_features(serialized):
    """Parses one serialized Example into its raw features (strings still encoded)."""
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)


def frame_index(serialized):
    """The record's 0-based frame index in its clip, parsed alone (selecting frames decodes none)."""
    return tf.io.parse_single_example(serialized, {"frame": FEATURE_SPEC["frame"]})["frame"]


def decode_features(features):
    """Decodes parsed features into tensors; see `parse_example`."""
    height, width = features["height"], features["width"]
    image = tf.io.decode_png(features["image_png"], channels=3)
    segmentation = tf.io.decode_png(features["segmentation_png"], channels=1)[..., 0]
    depth = tf.io.decode_raw(tf.io.decode_compressed(features["depth_zlib"], "ZLIB"), tf.float32)
    frame_shape = (surreal.FRAME_HEIGHT, surreal.FRAME_WIDTH)
    out = {
        "image": tf.ensure_shape(image, frame_shape + (3,)),
        "segmentation": tf.ensure_shape(segmentation, frame_shape),
        "depth": tf.ensure_shape(tf.reshape(depth, tf.stack([height, width])), frame_shape),
        "clip": features["clip"],
        "frame": features["frame"],
        "gender": features["gender"],
    }
    for name, shape in _FLOAT_FIELDS.items():
        out[name] = tf.reshape(features[name], shape)
    return out


def parse_example(serialized):
    """One serialized record -> dict of tensors.

    `image` uint8 [240, 320, 3] RGB; `segmentation` uint8 [240, 320] SMPL labels 0..24; `depth` float32 [240, 320]
    metres, background 0; `joints2d` float32 [16, 2] 0-based px and `joints3d` float32 [16, 3] camera metres (MPII
    order); `joints2d_smpl` [24, 2], `joints3d_smpl` [24, 3] (SMPL order); `intrinsics` [3, 3]; `cam_loc` [3] world
    metres; `pose` [72], `shape` [10], `zrot` [] (SMPL parameters as in `_info.mat`); `gender` int64 (0 female);
    `clip` string (e.g. b"train/run0/01_01/01_01_c0001"); `frame` int64 (0-based).
    """
    return decode_features(parse_features(serialized))
