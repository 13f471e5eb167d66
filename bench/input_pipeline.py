r"""Images/s of the training input pipeline (all four targets, augmentation on) against the 4-task training step.

    python bench/input_pipeline.py [--data=PATTERN] [--batches=60] [--train_steps=4] [--input_size=256]

Without --data it generates a few synthetic SURREAL clips and converts them first. The pipeline must deliver at
least 4x what the training step consumes, so the input never stalls training; the ratio is printed.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from arguments import at_least, positive_int  # noqa: E402  (beside this file, on sys.path as a script)

from mtha_tf import losses, tasks  # noqa: E402
from mtha_tf.config import make_config  # noqa: E402
from mtha_tf.data.pipeline import make_dataset  # noqa: E402
from mtha_tf.trainer import compile_model  # noqa: E402


def pipeline_rate(pattern, batch_size, input_size, batches):
    dataset = make_dataset(pattern, tasks.TASKS, training=True, batch_size=batch_size, input_size=input_size)
    iterator = iter(dataset)
    for _ in range(5):  # warm-up: tracing, autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def train_step_rate(pattern, batch_size, input_size, steps):
    config = make_config("paper", input_size=input_size, batch_size=batch_size)
    model = compile_model(config)
    dataset = make_dataset(pattern, tasks.TASKS, training=True, batch_size=batch_size, input_size=input_size)
    dataset = dataset.map(losses.targets_per_output(tasks.TASKS, config.num_stacks)).cache().repeat()
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)  # tracing
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="TFRecord glob; default: generate synthetic clips")
    parser.add_argument("--batch_size", type=positive_int, default=5)
    parser.add_argument("--input_size", type=positive_int, default=256)
    parser.add_argument("--batches", type=positive_int, default=60)
    parser.add_argument("--train_steps", type=at_least(0), default=4, help="0 skips the training-step reference")
    args = parser.parse_args()
    pattern = args.data
    if not pattern:
        from data_prep import embedded

        root = tempfile.mkdtemp(prefix="mtha_bench_")
        pattern, _ = embedded.prepare(root, train_clips=8, val_clips=1, num_frames=20, frame_stride=1)
    print(f"cores: {os.cpu_count()}, TensorFlow {tf.__version__}, input {args.input_size} px, batch {args.batch_size}")
    pipeline = pipeline_rate(pattern, args.batch_size, args.input_size, args.batches)
    print(f"input pipeline, 4 targets, augmented: {pipeline:.1f} images/s")
    if args.train_steps:
        step = train_step_rate(pattern, args.batch_size, args.input_size, args.train_steps)
        print(f"4-task training step (2 stacks, 256 features): {step:.2f} images/s")
        print(f"pipeline / training step: {pipeline / step:.1f}x (target >= 4x)")


if __name__ == "__main__":
    main()
