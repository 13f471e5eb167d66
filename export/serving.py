"""The served model: a tf.Module whose signatures decode, crop and normalise images in the graph, run the network's
last stack and decode its outputs into the input image's frame with the training codecs.

Signatures (N images per call; every output only for the tasks the model was trained on):
- `serving_default(image_bytes)`: JPEG or PNG strings [N]; the crop is the whole image, the camera SURREAL's.
- `with_box(image_bytes, box, focal_length, pelvis_depth)`: box [N, 4] = x0, y0, x1, y1 pixels, the square crop of
  side max(x1 - x0, y1 - y0) around the box centre (x1 <= x0 means the whole image); focal_length [N] px (0: SURREAL's
  600) and pelvis_depth [N] metres (0: 7 m, SURREAL's mean) only scale the x, y of `joints3d`. NaN anywhere, a
  negative focal length or depth, a box off the image: INVALID_ARGUMENT naming it.
- `with_box_uint8(images, box, focal_length, pelvis_depth)`: the same from uint8 [N, H, W, 3] RGB tensors.
- `heatmaps(image_bytes, box)`: the raw last-stack outputs plus `heatmap_to_image` [N, 3, 3] (grid -> pixels).

Outputs: `joints2d` [N, 16, 2] pixels and `joints2d_score` [N, 16]; `joints3d` [N, 16, 3] mm relative to the pelvis
(z from the predicted depth bins, x and y back-projected through the camera); `segmentation` [N, H, W] int32 parts
(0 background), `depth_bins` [N, H, W] int32 (0 background, 1..19, larger = farther) and `depth` [N, H, W] float32
metres relative to the pelvis, in each image's frame (H, W: the largest image of the call; `image_size` [N, 2] gives
each image's height and width).
"""

import functools

import keras
import tensorflow as tf

from export.fold_batch_norm import fold_batch_norms
from export.image_formats import JPEG_MAGIC, PNG_MAGIC
from mtha_tf import surreal, tasks
from mtha_tf.data import crop
from mtha_tf.data.sample import normalise_image
from mtha_tf.targets import make_codecs

MAX_IMAGE_SIDE = 8192  # larger claims are refused before decoding (a 20000 x 20000 PNG header would need 1.2 GB)
DEFAULT_FOCAL_PX = float(surreal.INTRINSICS[0, 0])
DEFAULT_PELVIS_DEPTH_M = 7.0
# The served functions' control flow is explicit (tf.cond, tf.map_fn, Python ifs on static task names): AutoGraph's
# conversion of the Python of every function they call only cost time (~1-2 s of each export).
_graph_function = functools.partial(tf.function, autograph=False)


def _image_size(image_bytes):
    """(height, width) from the JPEG or PNG header, refusing other formats and oversized claims."""
    is_png = tf.strings.substr(image_bytes, 0, 8) == PNG_MAGIC
    is_jpeg = tf.strings.substr(image_bytes, 0, 3) == JPEG_MAGIC
    known = tf.debugging.Assert(is_png | is_jpeg, ["image_bytes: not a JPEG or PNG image"])
    with tf.control_dependencies([known]):
        long_enough = tf.strings.length(image_bytes) >= 24
    header = tf.debugging.Assert(~is_png | long_enough, ["image_bytes: truncated PNG header"])

    def png_size():
        with tf.control_dependencies([header]):
            width_height = tf.io.decode_raw(tf.strings.substr(image_bytes, 16, 8), tf.int32, little_endian=False)
        return width_height[1], width_height[0]

    def jpeg_size():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        return shape[0], shape[1]

    height, width = tf.cond(is_png, png_size, jpeg_size)
    sane = (height > 0) & (width > 0) & (height <= MAX_IMAGE_SIDE) & (width <= MAX_IMAGE_SIDE)
    check = tf.debugging.Assert(sane, ["image_bytes: image of", height, "x", width, "pixels; at most",
                                       MAX_IMAGE_SIDE, "per side"])  # fmt: skip
    with tf.control_dependencies([check]):
        return tf.identity(height), tf.identity(width)


def decode_image(image_bytes):
    """One JPEG or PNG string -> uint8 [H, W, 3], validated first (InvalidArgument with the reason otherwise)."""
    height, width = _image_size(image_bytes)
    with tf.control_dependencies([height, width]):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def crop_window(box, height, width):
    """(centre [2], scale) of the square crop around `box` (x0, y0, x1, y1 px; x1 <= x0: the whole image)."""
    size = tf.cast(tf.stack([width, height]), tf.float32)
    whole = tf.concat([[-0.5, -0.5], size - 0.5], 0)
    finite = tf.reduce_all(tf.math.is_finite(box))  # before the choice below: NaN compares false, a "whole image"
    given, box = box, tf.where(box[2] > box[0], box, whole)
    inside = (box[0] < size[0] - 0.5) & (box[1] < size[1] - 0.5) & (box[2] > -0.5) & (box[3] > -0.5)
    check = tf.debugging.Assert(finite & (box[3] > box[1]) & inside, [
        "box", given, "must be finite, have x1 > x0 (x1 <= x0: the whole image), y1 > y0 and overlap the image of",
        height, "x", width, "pixels"])  # fmt: skip
    with tf.control_dependencies([check]):
        centre = (box[:2] + box[2:]) / 2.0
        # crop_matrix's window is 200 * scale pixels wide (Newell's convention).
        return centre, tf.reduce_max(box[2:] - box[:2]) / 200.0


def check_camera(focal_length, pelvis_depth):
    """The assertion that the camera inputs [N] are finite and >= 0 (0: the default); a NaN or a negative value would
    otherwise pass as the default unnoticed."""
    valid = [tf.reduce_all(tf.math.is_finite(v) & (v >= 0.0)) for v in (focal_length, pelvis_depth)]
    return tf.debugging.Assert(valid[0] & valid[1], ["focal_length", focal_length, "and pelvis_depth", pelvis_depth,
                                                     "must be finite and >= 0 (0: the default)"])  # fmt: skip


class ServingModule(tf.Module):
    """Wraps a trained model's last stack; `signatures()` gives what `tf.saved_model.save` needs."""

    def __init__(self, model, task_names, input_size):
        super().__init__()
        self.task_names = tasks.parse_tasks(task_names)
        self.input_size = input_size
        self.heatmap_size = input_size // 4
        self.codecs = make_codecs(self.heatmap_size)
        # Only the last stack's heads are outputs, with the batch norms that follow a convolution folded into it
        # (fold_batch_norm.py: two of every residual's three norms; the weights are copies of the trained ones).
        last_stack = keras.Model(model.inputs, {t: model.get_layer(t).output for t in self.task_names})
        network = fold_batch_norms(last_stack)
        # The module tracks the plain tf.Variables, not the Keras objects: the SavedModel then holds each weight once,
        # no Keras-specific functions, and one traced forward pass that every signature calls.
        self.network_weights = [weight.value for weight in network.weights]
        crops = tf.TensorSpec([None, input_size, input_size, 3], tf.float32)
        self.forward = _graph_function(
            lambda images: network({"image": images}, training=False), input_signature=[crops]
        )

    # Pre-processing -----------------------------------------------------------------------------------------------
    def _crop(self, image, box):
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        centre, scale = crop_window(box, height, width)
        to_input = crop.crop_matrix(centre, scale, self.input_size)
        rgb = crop.warp(tf.cast(image, tf.float32) / 255.0, to_input, self.input_size, "BILINEAR")
        return normalise_image(rgb), crop.crop_matrix(centre, scale, self.heatmap_size), tf.stack([height, width])

    def _crop_all(self, decode, inputs, box):
        specs = (tf.TensorSpec([self.input_size, self.input_size, 3], tf.float32), tf.TensorSpec([3, 3], tf.float32),
                 tf.TensorSpec([2], tf.int32))  # fmt: skip
        return tf.map_fn(lambda args: self._crop(decode(args[0]), args[1]), (inputs, box), fn_output_signature=specs)

    # Post-processing ----------------------------------------------------------------------------------------------
    def _to_image_frame(self, maps, to_image, sizes, canvas):
        """Label or value maps [N, S, S] on the heatmap grid -> [N, H, W] in each image's frame (nearest)."""

        def one(args):
            values, matrix, size = args
            warped = crop.warp_to_shape(values[..., None], matrix, canvas, "NEAREST")[..., 0]
            rows, cols = tf.range(canvas[0])[:, None] < size[0], tf.range(canvas[1])[None, :] < size[1]
            return tf.where(rows & cols, warped, tf.zeros_like(warped))

        return tf.map_fn(one, (maps, to_image, sizes), fn_output_signature=maps.dtype)

    def _decode(self, raw, to_heatmap, sizes, focal_length, pelvis_depth):
        to_image = tf.linalg.inv(to_heatmap)
        canvas = tf.reduce_max(sizes, axis=0)
        out = {"image_size": sizes}
        if "pose2d" in raw:
            grid, score = self.codecs["pose2d"].decode(raw["pose2d"])
            out.update(joints2d=crop.transform_points(to_image, grid), joints2d_score=score)
        if "pose3d" in raw:
            grid, bins, _ = self.codecs["pose3d"].decode(raw["pose3d"])
            focal = tf.where(focal_length > 0, focal_length, DEFAULT_FOCAL_PX)
            depth = tf.where(pelvis_depth > 0, pelvis_depth, DEFAULT_PELVIS_DEPTH_M)
            principal = tf.cast(sizes[:, ::-1], tf.float32) / 2.0  # SURREAL's K: (160, 120) for 320 x 240
            zeros, ones = tf.zeros_like(focal), tf.ones_like(focal)
            intrinsics = tf.reshape(tf.stack([focal, zeros, principal[:, 0], zeros, focal, principal[:, 1], zeros,
                                              zeros, ones], axis=-1), [-1, 3, 3])  # fmt: skip
            frame = crop.transform_points(to_image, grid)
            out["joints3d"] = self.codecs["pose3d"].lift(frame, bins, depth, intrinsics)
        if "segmentation" in raw:
            parts = self.codecs["segmentation"].decode(raw["segmentation"])
            out["segmentation"] = self._to_image_frame(parts, to_image, sizes, canvas)
        if "depth" in raw:
            bins, _ = self.codecs["depth"].decode(raw["depth"])
            bins = self._to_image_frame(bins, to_image, sizes, canvas)
            out.update(depth_bins=bins, depth=self.codecs["depth"].metres(bins))
        return out

    def _predict(self, decode, inputs, box, focal_length, pelvis_depth):
        with tf.control_dependencies([check_camera(focal_length, pelvis_depth)]):
            images, to_heatmap, sizes = self._crop_all(decode, inputs, box)
        raw = self.forward(images)
        return self._decode(raw, to_heatmap, sizes, focal_length, pelvis_depth)

    # Signatures ---------------------------------------------------------------------------------------------------
    def signatures(self):
        strings, vector = tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.float32)
        boxes = tf.TensorSpec([None, 4], tf.float32)
        uint8_images = tf.TensorSpec([None, None, None, 3], tf.uint8)

        @_graph_function(input_signature=[strings])
        def serving_default(image_bytes):
            zeros = tf.zeros_like(image_bytes, tf.float32)
            box = tf.zeros([tf.shape(image_bytes)[0], 4])
            return self._predict(decode_image, image_bytes, box, zeros, zeros)

        @_graph_function(input_signature=[strings, boxes, vector, vector])
        def with_box(image_bytes, box, focal_length, pelvis_depth):
            return self._predict(decode_image, image_bytes, box, focal_length, pelvis_depth)

        @_graph_function(input_signature=[uint8_images, boxes, vector, vector])
        def with_box_uint8(images, box, focal_length, pelvis_depth):
            return self._predict(tf.identity, images, box, focal_length, pelvis_depth)

        @_graph_function(input_signature=[strings, boxes])
        def heatmaps(image_bytes, box):
            images, to_heatmap, _ = self._crop_all(decode_image, image_bytes, box)
            raw = dict(self.forward(images))
            raw["heatmap_to_image"] = tf.linalg.inv(to_heatmap)
            return raw

        return {"serving_default": serving_default, "with_box": with_box, "with_box_uint8": with_box_uint8,
                "heatmaps": heatmaps}  # fmt: skip
