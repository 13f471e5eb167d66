r"""Runs an exported SavedModel on an image and draws what it predicts, for a person to look at.

    python -m mtha_tf.predict --saved_model=E --image=x.jpg --out=viz.png [--box=x0,y0,x1,y1]   # E or E/<version>

The picture shows, side by side at the image's size: the image with the 2D skeleton, the part map, the depth map
(near = warm), and the 3D skeleton seen from the side; panels of tasks the model was not trained on are left out.
The image is read upright, as photo viewers show it (OpenCV applies a JPEG's EXIF orientation, which TensorFlow's
decoders ignore), and those pixels go to the SavedModel's `with_box_uint8` signature, so that a phone photo stored
sideways is predicted and drawn the way it is seen. The SavedModel does its own cropping and post-processing.
"""

import cv2
import numpy as np
import tensorflow as tf
from absl import app, flags

from export.client import is_box, parse_box, read_image_file
from export.saved_model import resolve_version
from mtha_tf import visualize


def run_saved_model(saved_model_dir, rgb, box=None):
    """Outputs of the SavedModel for one RGB uint8 image [H, W, 3], as numpy arrays without the batch dimension."""
    model = tf.saved_model.load(saved_model_dir)
    zero, boxes = tf.zeros([1]), tf.constant([box or [0.0] * 4], tf.float32)  # a zero box: the whole image
    outputs = model.signatures["with_box_uint8"](images=tf.constant(rgb[None]), box=boxes, focal_length=zero,
                                                 pelvis_depth=zero)  # fmt: skip
    return {name: value.numpy()[0] for name, value in outputs.items()}


def draw(rgb, outputs):
    """RGB uint8 [H, W, 3] + outputs of `run_saved_model` -> RGB uint8 [H, W * panels, 3]."""
    height, width = rgb.shape[:2]
    thickness = max(1, round(max(height, width) / 200))
    panels = [visualize.draw_skeleton(rgb, outputs["joints2d"], thickness=thickness) if "joints2d" in outputs else rgb]
    if "segmentation" in outputs:
        panels.append(visualize.colour_parts(outputs["segmentation"][:height, :width]))
    if "depth_bins" in outputs:
        panels.append(visualize.colour_depth(outputs["depth_bins"][:height, :width]))
    if "joints3d" in outputs:
        # x, y depend on the assumed camera (a crop seen through SURREAL's is large): fit the extent to the skeleton.
        extent = max(1200.0, 2.2 * float(np.abs(outputs["joints3d"][:, 1:]).max()))
        side = visualize.skeleton_3d(outputs["joints3d"], max(height, width), extent_mm=extent)
        panels.append(side[:height] if height <= width else cv2.resize(side, (width, height)))
    return np.concatenate([np.asarray(p, np.uint8) for p in panels], axis=1)


def main(argv):
    del argv
    values = flags.FLAGS
    try:
        image_bytes = read_image_file(values.image)
    except OSError as error:
        raise SystemExit(f"error: {error}") from None
    bgr = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)  # upright (EXIF orientation applied)
    if bgr is None:
        raise SystemExit(f"error: {values.image}: not an image OpenCV can read")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    try:
        saved_model = resolve_version(values.saved_model)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    box = parse_box(values.box)
    try:
        outputs = run_saved_model(saved_model, rgb, box)
    except tf.errors.InvalidArgumentError as error:  # the graph's check: a box off the image
        lines = error.message.splitlines()
        reason = next((line for line in lines if line.startswith("assertion failed")), lines[0])
        raise SystemExit(f"error: {values.image}: the model refused it: {reason}") from None
    picture = draw(rgb, outputs)
    try:
        visualize.write_image(values.out, picture)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {values.out} (model {saved_model})")


if __name__ == "__main__":
    flags.DEFINE_string("saved_model", None, "An export (E: its highest version) or a version folder (E/<N>).",
                        required=True)  # fmt: skip
    flags.DEFINE_string("image", None, "An image file OpenCV reads (JPEG, PNG, ...).", required=True)
    flags.DEFINE_string("out", "prediction.png", "Where to write the picture.")
    flags.DEFINE_string("box", None, "x0,y0,x1,y1 person box in pixels (default: the whole image).")
    flags.register_validator("box", is_box, "expected four finite numbers, x0,y0,x1,y1")
    app.run(main)
