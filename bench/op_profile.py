r"""Where TensorFlow's training step goes: time per op type, from the TF profiler's trace of a few steps.

    python bench/op_profile.py [--tasks=pose2d] [--mode=fp32|bf16|fp16] [--steps=2] [--batch_size=5]
                               [--input_size=256] [--features=256] [--num_stacks=2] [--top=25] [--logdir=DIR]

Needs `pip install -e .`; nothing beyond TensorFlow (the trace is read with the XSpace protobuf TensorFlow ships, no
TensorBoard plugin). The model and step are bench/train_step.py's (paper shapes by default, random data, train.py's
CPU settings), traced and warmed up before the profiled steps. Op times are summed over the profiled steps and
divided by their number; TensorFlow runs independent ops side by side, so with its default inter-op threads the sum
exceeds the step. Set `TF_NUM_INTEROP_THREADS=1` for times that add up to the step (then with
`TF_NUM_INTRAOP_THREADS` = the cores, one op at a time on all of them, as PyTorch runs). oneDNN's kernels show as
`_MklNative*` ops on CPUs; `ONEDNN_VERBOSE=1` names the kernel behind each (docs/performance.md, sessions 6 and 12).
"""

import argparse
import collections
import os
import pathlib
import sys
import tempfile
import time

from arguments import add_shape_arguments, positive_int, task_list  # beside this file, on sys.path as a script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The profiler's own events on the host plane (executor, function calls, annotations), not ops.
NOT_OPS = {"Run", "Process", "Record", "StartRegion", "StopRegion"}


def op_times(xplane_path):
    """{op type: (total seconds, calls)} of the TensorFlow op events in a profiler trace (`*.xplane.pb`). Op events on
    the host plane are named "<op name>:<op type>"."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(pathlib.Path(xplane_path).read_bytes())
    times = collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: metadata.name for key, metadata in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                _, separator, op_type = names.get(event.metadata_id, "").rpartition(":")
                if not separator or not op_type or " " in op_type or op_type in NOT_OPS or op_type.startswith("__"):
                    continue
                times[op_type][0] += event.duration_ps * 1e-12
                times[op_type][1] += 1
    return {op_type: tuple(total) for op_type, total in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=task_list, default="pose2d")
    parser.add_argument(
        "--mode",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="fp32, bf16 (mixed_bfloat16) or fp16 (mixed_float16)",
    )
    parser.add_argument(
        "--steps", type=positive_int, default=2, help="profiled steps, after a trace and a warm-up step"
    )
    add_shape_arguments(parser)
    parser.add_argument("--top", type=positive_int, default=25, help="op types listed, the costliest first")
    parser.add_argument("--logdir", help="where the trace is written (default: a temporary directory)")
    args = parser.parse_args()
    args.batch_norm = "fused"

    from mtha_tf import cpu_runtime

    cpu_runtime.configure_for_training()  # as train.py trains (a no-op for what the environment already sets)
    import numpy as np
    import tensorflow as tf
    from step_measurements import compiled_tf_model, tf_training_step

    step = tf_training_step(args, compiled_tf_model(args, args.mode), np.random.default_rng(0))
    for _ in range(2):  # the trace, then one step that allocates what the later ones reuse
        step()
    logdir = args.logdir or tempfile.mkdtemp(prefix="op_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    tf.profiler.experimental.stop()
    traces = sorted(pathlib.Path(logdir).rglob("*.xplane.pb"), key=lambda path: path.stat().st_mtime)
    if not traces:
        sys.exit(f"the profiler wrote no *.xplane.pb under {logdir}")
    times = op_times(traces[-1])
    total = sum(seconds for seconds, _ in times.values())
    shape = f"{args.tasks}, {args.mode}, batch {args.batch_size}, {args.input_size} px"
    print(f"{shape}: {seconds * 1e3:.0f} ms per step (under the profiler), op time {total / args.steps * 1e3:.0f} ms "
          f"per step; trace in {traces[-1]}")  # fmt: skip
    print(f"{'op type':40} {'ms/step':>9} {'share':>6} {'calls/step':>10}")
    for op_type, (op_seconds, calls) in sorted(times.items(), key=lambda item: -item[1][0])[: args.top]:
        print(f"{op_type:40} {op_seconds / args.steps * 1e3:9.1f} {100 * op_seconds / total:5.1f}% "
              f"{calls / args.steps:10.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
