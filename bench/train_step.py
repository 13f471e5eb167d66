r"""Training and inference speed of the networks in TensorFlow against a PyTorch copy, and against the CPU's limit.

    python bench/train_step.py [--steps=5] [--batch_size=5] [--input_size=256] [--features=256] [--num_stacks=2]
                               [--networks=all,pose2d] [--precisions=fp32,bf16] [--xla=pose2d] [--keras_bn=pose2d]
                               [--kinds=train,infer] [--skip_torch]

Needs `pip install -e .` and, for the peer, `pip install torch==2.13.0` (CPU wheel). Every figure comes from its own
subprocess (same thread count: all cores), so peak memory is per configuration. TensorFlow trains with train.py's
process settings (mtha_tf/cpu_runtime.py: oneDNN kernels, 2 malloc arenas) and infers with TensorFlow's defaults, as
served (the environment overrides both: e.g. TF_ENABLE_ONEDNN_OPTS=0|1). Training: images/s of one optimizer step
(RMSprop, the paper's losses, random inputs and targets of the right shapes: the input pipeline is measured by
bench/input_pipeline.py) with tf.function, with XLA (`jit_compile`), and with mixed_bfloat16, beside PyTorch fp32
(channels-last) and bf16 autocast; the TF/PyTorch ratio pair by pair. Inference: images/s at batch 1 and 32, fp32, of
the Keras model and of the exported network (rows "export": batch norms folded into the convolutions,
export/fold_batch_norm.py) against PyTorch's eval mode. The limit: model FLOPs per image (convolutions, counted from the
Keras layers; a training step is ~3x the forward pass) and the achieved FLOP/s as a percentage of an fp32 GEMM peak
measured in the same run. For the networks in --keras_bn, training is also measured with Keras' own BatchNormalization
in place of the fused layer, the reference for what fused_batch_norm.py gains.
"""

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
NETWORKS = {"all": "pose2d,segmentation,depth,pose3d", "pose2d": "pose2d"}


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(step, steps):
    """Median seconds per call after a warm-up call: robust to the bursts of a shared (virtual) machine, where a mean
    over a few steps moved by +-25 % between identical runs."""
    step()  # tracing / warm-up
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def conv_flops(model):
    """Forward FLOPs per image of every Conv2D (2 x MACs): the network's cost, BatchNorm and adds aside."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel = layer.kernel.shape
            total += 2 * height * width * out_channels * kernel[0] * kernel[1] * kernel[2]
    return total


def measure_tf(args, mode):
    import keras
    import numpy as np
    import tensorflow as tf

    from mtha_tf import losses, tasks
    from mtha_tf.config import make_config
    from mtha_tf.model import output_name
    from mtha_tf.trainer import compile_model, set_precision

    if args.batch_norm == "keras":  # the reference: Keras' layer where the model uses the fused one
        from mtha_tf.model import blocks

        blocks.FusedBatchNormalization = keras.layers.BatchNormalization
    set_precision(mode == "bf16")
    config = make_config("paper", tasks=args.tasks, num_stacks=args.num_stacks, features=args.features,
                         input_size=args.input_size, batch_size=args.batch_size, jit_compile=mode == "xla")  # fmt: skip
    names = config.task_names()
    model = compile_model(config)
    rng = np.random.default_rng(0)
    size, heat = args.input_size, args.input_size // 4
    images = rng.normal(size=(args.batch_size, size, size, 3)).astype("float32")
    targets = {}
    for task in names:
        channels = tasks.OUTPUT_CHANNELS[task]
        if losses.KERAS_LOSSES[task] is losses.SpatialCrossEntropy:
            value = rng.integers(0, channels, (args.batch_size, heat, heat))
        else:
            value = rng.random((args.batch_size, heat, heat, channels)).astype("float32")
        for stack in range(args.num_stacks):
            targets[output_name(task, stack, args.num_stacks)] = value
    result = {"flops_per_image": conv_flops(model), "parameters": model.count_params()}
    if args.kind == "train":
        seconds = _timed(lambda: model.train_on_batch({"image": images}, targets), args.steps)
        result["images_per_s"] = args.batch_size / seconds
    else:
        from export.fold_batch_norm import fold_batch_norms

        # The Keras model as trained, and the exported network (batch norms folded into the convolutions).
        for prefix, network in (("", model), ("folded_", fold_batch_norms(model))):
            forward = tf.function(lambda x, n=network: n({"image": x}, training=False), jit_compile=mode == "xla")
            for batch in (1, 32):
                x = tf.constant(rng.normal(size=(batch, size, size, 3)), tf.float32)
                seconds = _timed(lambda x=x, f=forward: f(x).values(), args.steps)
                result[f"{prefix}batch{batch}_images_per_s"] = batch / seconds
    keras.backend.clear_session()
    return result


def measure_torch(args, mode):
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from peer_torch import MultiTaskHourglass

    from mtha_tf import losses, tasks

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    names = tasks.parse_tasks(args.tasks)
    model = MultiTaskHourglass(names, args.num_stacks, args.features).to(memory_format=torch.channels_last)
    size, heat, batch = args.input_size, args.input_size // 4, args.batch_size
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16")
    result = {}
    if args.kind == "train":
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.99, eps=1e-8)
        images = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
        targets = []
        for task in names:
            channels = tasks.OUTPUT_CHANNELS[task]
            if losses.KERAS_LOSSES[task] is losses.SpatialCrossEntropy:
                targets.append(("ce", torch.randint(0, channels, (batch, heat, heat))))
            else:
                targets.append(("rmse", torch.rand(batch, channels, heat, heat)))
        targets = targets * args.num_stacks  # outputs come stack by stack, tasks in order

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                outputs = model(images)
            loss = 0.0
            for output, (kind, target) in zip(outputs, targets, strict=True):
                output = output.float()
                if kind == "ce":
                    loss = loss + torch.nn.functional.cross_entropy(output, target)
                else:
                    loss = loss + torch.sqrt(((output - target) ** 2).mean(dim=(1, 2, 3)) + 1e-12).mean()
            loss.backward()
            optimizer.step()

        model.train()
        result["images_per_s"] = batch / _timed(step, args.steps)
    else:
        model.eval()
        for count in (1, 32):
            x = torch.randn(count, 3, size, size).to(memory_format=torch.channels_last)

            def forward(x=x):
                with torch.inference_mode(), autocast:
                    model(x)

            result[f"batch{count}_images_per_s"] = count / _timed(forward, args.steps)
    return result


def gemm_peak(repeats=5):
    """fp32 FLOP/s of square matrix products (2048 and 4096), the best of TensorFlow's and NumPy's BLAS: the reference
    is the fastest GEMM this process can run, not one library's (TF's Eigen matmul trails OpenBLAS on some CPUs)."""
    import numpy as np
    import tensorflow as tf

    best = {"tensorflow": 0.0, "numpy": 0.0}
    for size in (2048, 4096):
        a = np.random.default_rng(0).random((size, size), np.float32)
        tf_a = tf.constant(a)
        product = tf.function(lambda tf_a=tf_a: tf.matmul(tf_a, tf_a))
        for library, run in (("tensorflow", lambda product=product: product().numpy()), ("numpy", lambda a=a: a @ a)):
            run()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            best[library] = max(best[library], 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def run_one(args):
    """Child process: one measurement, printed as JSON."""
    if args.framework == "gemm":
        result = gemm_peak()
    elif args.framework == "tf":
        if args.kind == "train":  # as train.py runs; inference as TF Serving and tf.saved_model.load run it
            from mtha_tf import cpu_runtime

            cpu_runtime.configure_before_tensorflow()
        result = measure_tf(args, args.mode)
    else:
        result = measure_torch(args, args.mode)
    result["peak_rss_gib"] = _rss_gib()
    print("RESULT " + json.dumps(result))


def child(args, framework, kind, mode, network, batch_norm="fused"):
    shape = [
        f"--{name}={getattr(args, name)}" for name in ("steps", "batch_size", "input_size", "features", "num_stacks")
    ]
    command = [sys.executable, __file__, "--child", f"--framework={framework}", f"--kind={kind}", f"--mode={mode}",
               f"--tasks={NETWORKS[network]}", f"--batch_norm={batch_norm}", *shape]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"  {framework} {kind} {mode} {network}: failed\n{done.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=5)
    parser.add_argument("--input_size", type=int, default=256)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--num_stacks", type=int, default=2)
    parser.add_argument("--networks", default="all,pose2d")
    parser.add_argument("--xla", default="pose2d", help="networks also measured with XLA (4 tasks: ~9 GB to compile)")
    parser.add_argument("--keras_bn", default="pose2d", help="networks also trained with Keras' BatchNormalization")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="training precisions (bf16: only CPUs with avx512_bf16)"
    )
    parser.add_argument("--kinds", default="train,infer", help="what to measure: training steps, inference or both")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", help=argparse.SUPPRESS)
    parser.add_argument("--batch_norm", default="fused", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_one(args)

    gemm = child(args, "gemm", "-", "fp32", "pose2d")
    peak = max(gemm["tensorflow"], gemm["numpy"])
    print(
        f"{os.cpu_count()} CPU threads; fp32 GEMM peak (2048^3 and 4096^3): {peak / 1e9:.0f} GFLOP/s "
        f"(TensorFlow {gemm['tensorflow'] / 1e9:.0f}, NumPy {gemm['numpy'] / 1e9:.0f})"
    )
    print(f"batch {args.batch_size}, {args.input_size} px, {args.num_stacks} stacks, {args.features} features\n")
    print(f"{'network':8} {'what':26} {'TF img/s':>9} {'PyTorch':>9} {'TF/PT':>6} {'TF RSS GiB':>10} {'%peak':>6}")
    kinds, precisions = args.kinds.split(","), args.precisions.split(",")
    for network in args.networks.split(","):
        runs = [(mode, "fused") for mode in precisions]
        runs += [("xla", "fused")] if network in args.xla.split(",") else []
        runs += [(mode, "keras") for mode in precisions] if network in args.keras_bn.split(",") else []
        runs = runs if "train" in kinds else []
        for mode, batch_norm in runs:
            tf_result = child(args, "tf", "train", mode, network, batch_norm)
            with_peer = not args.skip_torch and mode != "xla" and batch_norm == "fused"
            torch_result = child(args, "torch", "train", mode, network) if with_peer else None
            if tf_result is None:
                continue
            rate = tf_result["images_per_s"]
            utilisation = 100 * 3 * tf_result["flops_per_image"] * rate / peak if mode != "bf16" else float("nan")
            peer = torch_result["images_per_s"] if torch_result else float("nan")
            what = f"train {mode}" + (", Keras BN" if batch_norm == "keras" else "")
            print(f"{network:8} {what:26} {rate:9.2f} {peer:9.2f} {rate / peer:6.2f} "
                  f"{tf_result['peak_rss_gib']:10.2f} {utilisation:6.1f}")  # fmt: skip
        if "infer" not in kinds:
            continue
        tf_result = child(args, "tf", "infer", "fp32", network)
        torch_result = None if args.skip_torch else child(args, "torch", "infer", "fp32", network)
        for prefix, batch in itertools.product(("", "folded_"), (1, 32)):
            key = f"batch{batch}_images_per_s"
            rate = tf_result[prefix + key] if tf_result else float("nan")
            peer = torch_result[key] if torch_result else float("nan")
            utilisation = 100 * tf_result["flops_per_image"] * rate / peak if tf_result else float("nan")
            what = f"inference b{batch} fp32" + (", export" if prefix else "")
            print(f"{network:8} {what:26} {rate:9.2f} {peer:9.2f} {rate / peer:6.2f} "
                  f"{tf_result['peak_rss_gib']:10.2f} {utilisation:6.1f}")  # fmt: skip
        if tf_result:
            print(f"{network:8} forward GFLOP/image: {tf_result['flops_per_image'] / 1e9:.1f}, "
                  f"parameters {tf_result['parameters']:,}")  # fmt: skip


if __name__ == "__main__":
    main()
