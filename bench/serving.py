r"""The exported SavedModel against the bare Keras forward pass on the same image: what serving adds.

    python bench/serving.py [--tasks=pose2d,segmentation,depth,pose3d] [--features=256] [--input_size=256]
                            [--num_stacks=2] [--repeats=20]

Batch 1: p50 and p95 latency of `serving_default` (JPEG bytes in; decoding, cropping, normalisation, decoding of every
output into the image's frame) and of the Keras model on the already-cropped tensor, and their ratio (target <= 1.1:
pre- and post-processing nearly free). Batch 32: images/s of both. Random weights: speed does not depend on them.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from arguments import positive_int, task_list  # noqa: E402  (beside this file, on sys.path as a script)

from export.saved_model import export_model  # noqa: E402
from mtha_tf import tasks  # noqa: E402
from mtha_tf.model import build_model  # noqa: E402


def timings(function, repeats):
    function()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=task_list, default=",".join(tasks.TASKS))
    parser.add_argument("--features", type=positive_int, default=256)
    parser.add_argument("--num_stacks", type=positive_int, default=2)
    parser.add_argument("--input_size", type=positive_int, default=256)
    parser.add_argument("--repeats", type=positive_int, default=20)
    args = parser.parse_args()
    task_names = tasks.parse_tasks(args.tasks)
    size = args.input_size

    model = build_model(task_names, args.num_stacks, args.features, size)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, task_names, size, tmp)
        serving = tf.saved_model.load(path).signatures["serving_default"]

        rng = np.random.default_rng(0)
        picture = cv2.resize(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), (size, size))
        jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
        crop = tf.constant(rng.normal(size=(1, size, size, 3)), tf.float32)
        keras_forward = tf.function(lambda x: model({"image": x}, training=False))

        rows = []
        for batch in (1, 32):
            images, crops = tf.constant([jpeg] * batch), tf.tile(crop, [batch, 1, 1, 1])
            repeats = args.repeats if batch == 1 else max(3, args.repeats // 8)
            saved = timings(lambda images=images: serving(image_bytes=images), repeats)
            bare = timings(lambda crops=crops: keras_forward(crops), repeats)
            rows.append((batch, saved, bare))

    print(f"model: tasks={','.join(task_names)} stacks={args.num_stacks} features={args.features} input={size}px, "
          f"{model.count_params():,} parameters; {os.cpu_count()} CPU threads")  # fmt: skip
    batch, saved, bare = rows[0]
    print("batch 1 latency (ms)        p50      p95")
    print(f"  SavedModel (JPEG in)   {1e3 * np.median(saved):8.1f} {1e3 * np.percentile(saved, 95):8.1f}")
    print(f"  Keras forward (crop)   {1e3 * np.median(bare):8.1f} {1e3 * np.percentile(bare, 95):8.1f}")
    print(f"  ratio SavedModel/Keras p50: {np.median(saved) / np.median(bare):.3f} (target <= 1.1)")
    batch, saved, bare = rows[1]
    print(f"batch 32 throughput: SavedModel {batch / np.median(saved):.1f} images/s, "
          f"Keras {batch / np.median(bare):.1f} images/s, ratio {np.median(bare) / np.median(saved):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
