r"""Training and inference speed of the networks in TensorFlow against a PyTorch copy, and against the machine's limit.

    python bench/train_step.py [--device=cpu|gpu] [--steps=5] [--batch_size=5] [--input_size=256] [--features=256]
                               [--num_stacks=2] [--networks=all,pose2d] [--precisions=fp32,bf16] [--xla=pose2d]
                               [--keras_bn=pose2d] [--kinds=train,infer] [--frameworks=tf,torch] [--rounds=1]

Needs `pip install -e .` and, for the peer, `pip install torch==2.13.0` (CPU wheel; on a GPU machine a CUDA build).
Every figure comes from its own subprocess (same thread count: all cores), so peak memory is per configuration;
--rounds=N alternates N such pairs of TensorFlow and PyTorch runs per row and prints medians and the ratios' range
(on a shared virtual machine one pair's ratio moved by +-20 %).
On the CPU, TensorFlow trains with train.py's process settings (mtha_tf/cpu_runtime.py: oneDNN kernels, 2 malloc arenas,
half the cores per op) and infers with TensorFlow's defaults, as served (the environment overrides both: e.g.
TF_ENABLE_ONEDNN_OPTS=0|1). Training: images/s of one optimizer step (RMSprop, the paper's losses, random inputs and
targets of the right shapes: the input pipeline is measured by bench/input_pipeline.py) with tf.function and in mixed
precision (bf16: mixed_bfloat16 against PyTorch's bf16 autocast; fp16, on a GPU: mixed_float16 with Keras' loss scaling
against fp16 autocast with a GradScaler), beside PyTorch (channels-last); the TF/PyTorch ratio pair by pair. For the
networks in --xla, also with XLA (`jit_compile`) in each precision (rows "fp32+xla", "fp16+xla"), against the same
precision's PyTorch rounds (eager: PyTorch has no XLA). On a GPU, "fp32" is each framework's default: TF32 tensor cores
for convolutions in both. Inference: images/s at batch 1 and 32, fp32, of the Keras model and of the exported network
(rows "export": batch norms folded into the convolutions, export/fold_batch_norm.py) against PyTorch's eval mode. The
limit: model FLOPs per image (convolutions; a training step is ~3x the forward pass) and the achieved FLOP/s as a
percentage of a GEMM peak of the same precision measured in the same run (bench/gemm_peak.py). For the networks in
--keras_bn, training is also measured with Keras' own BatchNormalization in place of the fused layer, the reference for
what fused_batch_norm.py gains.
"""

import argparse
import contextlib
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
MIXED_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(step, steps, after_warm_up=None):
    """Median seconds per call after a warm-up call: robust to the bursts of a shared (virtual) machine, where a mean
    over a few steps moved by +-25 % between identical runs."""
    step()  # tracing / warm-up
    if after_warm_up:
        after_warm_up()
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


def random_targets(rng, args, names):
    """{task: NumPy target} of the right shapes: class labels for label-map tasks, heatmaps in [0, 1) otherwise."""
    from mtha_tf import tasks

    heat = args.input_size // 4
    targets = {}
    for task in names:
        channels = tasks.OUTPUT_CHANNELS[task]
        if task in tasks.LABEL_MAP_TASKS:
            targets[task] = rng.integers(0, channels, (args.batch_size, heat, heat))
        else:
            targets[task] = rng.random((args.batch_size, heat, heat, channels)).astype("float32")
    return targets


def measure_tf(args, mode):
    import keras
    import numpy as np
    import tensorflow as tf

    from mtha_tf.config import make_config
    from mtha_tf.model import output_name
    from mtha_tf.trainer import compile_model

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("--device=gpu, but TensorFlow sees no GPU (install tensorflow[and-cuda])")
    if args.batch_norm == "keras":  # the reference: Keras' layer where the model uses the fused one
        from mtha_tf.model import blocks

        blocks.FusedBatchNormalization = keras.layers.BatchNormalization
    precision, _, compiler = mode.partition("+")  # "fp16+xla": mixed_float16, the step compiled by XLA
    xla = compiler == "xla"
    # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16.
    keras.mixed_precision.set_global_policy(MIXED_POLICIES.get(precision, "float32"))
    config = make_config("paper", tasks=args.tasks, num_stacks=args.num_stacks, features=args.features,
                         input_size=args.input_size, batch_size=args.batch_size, jit_compile=xla)  # fmt: skip
    names = config.task_names()
    model = compile_model(config)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.batch_size, args.input_size, args.input_size, 3)).astype("float32")
    per_task = random_targets(rng, args, names)
    targets = {
        output_name(task, stack, args.num_stacks): per_task[task] for task in names for stack in range(args.num_stacks)
    }
    result = {"flops_per_image": conv_flops(model), "parameters": model.count_params()}
    on_gpu = args.device == "gpu"
    # Peak device memory counts from after the warm-up, as for PyTorch (autotuning tries large workspaces).
    reset_peak = (lambda: tf.config.experimental.reset_memory_stats("GPU:0")) if on_gpu else None
    if args.kind == "train":  # train_on_batch returns the losses as NumPy: each step waits for the device
        seconds = _timed(lambda: model.train_on_batch({"image": images}, targets), args.steps, reset_peak)
        result["images_per_s"] = args.batch_size / seconds
        if on_gpu:
            result["peak_device_gib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    else:
        from export.fold_batch_norm import fold_batch_norms

        def forward(network):
            def run(inputs):
                # One scalar of all outputs back to the host waits for the whole forward pass (on a GPU too) without
                # timing a copy of every output.
                outputs = network(inputs, training=False).values()
                return tf.add_n([tf.reduce_sum(tf.cast(y, tf.float32)) for y in outputs])

            return tf.function(run, jit_compile=xla)

        # The Keras model as trained, and the exported network (batch norms folded into the convolutions).
        for prefix, network in (("", model), ("folded_", fold_batch_norms(model))):
            run = forward(network)
            for batch in (1, 32):
                x = tf.constant(rng.normal(size=(batch, args.input_size, args.input_size, 3)), tf.float32)
                seconds = _timed(lambda x=x, run=run: run({"image": x}).numpy(), args.steps)
                result[f"{prefix}batch{batch}_images_per_s"] = batch / seconds
    keras.backend.clear_session()
    return result


def measure_torch(args, mode):
    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from peer_torch import MultiTaskHourglass, conv_flops_per_image

    from mtha_tf import tasks

    torch.manual_seed(0)
    if args.device == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("--device=gpu, but PyTorch sees no GPU (a CUDA build of torch is needed)")
        device, sync = "cuda", torch.cuda.synchronize
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest algorithms, as TF autotunes
    else:
        device, sync = "cpu", lambda: None
        torch.set_num_threads(os.cpu_count())
    names = tasks.parse_tasks(args.tasks)
    model = MultiTaskHourglass(names, args.num_stacks, args.features)
    result = {"flops_per_image": conv_flops_per_image(model, args.input_size)}
    model = model.to(device, memory_format=torch.channels_last)

    # Peak device memory counts from after the warm-up: cuDNN's autotuning tries algorithms with large workspaces.
    reset_peak = torch.cuda.reset_peak_memory_stats if device == "cuda" else None

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
    autocast = torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()
    size, batch = args.input_size, args.batch_size
    if args.kind == "train":
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.99, eps=1e-8)
        scaler = torch.amp.GradScaler(device, enabled=mode == "fp16")
        images = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
        targets = []
        for task, target in random_targets(np.random.default_rng(0), args, names).items():
            if task in tasks.LABEL_MAP_TASKS:
                targets.append(("ce", torch.from_numpy(target).to(device)))
            else:
                targets.append(("rmse", torch.from_numpy(target).permute(0, 3, 1, 2).contiguous().to(device)))
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
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sync()

        model.train()
        result["images_per_s"] = batch / _timed(step, args.steps, reset_peak)
    else:
        model.eval()
        for count in (1, 32):
            x = torch.randn(count, 3, size, size, device=device).to(memory_format=torch.channels_last)

            def forward(x=x):
                with torch.inference_mode(), autocast:
                    model(x)
                sync()

            result[f"batch{count}_images_per_s"] = count / _timed(forward, args.steps, reset_peak)
    if device == "cuda":
        result["peak_device_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def run_one(args):
    """Child process: one measurement, printed as JSON."""
    if args.framework == "gemm":
        import gemm_peak

        result = gemm_peak.measure(args.device, args.kind.split(","))
    elif args.framework == "tf":
        if args.kind == "train" and args.device == "cpu":  # as train.py runs; inference as TF Serving runs it
            from mtha_tf import cpu_runtime

            cpu_runtime.configure_before_tensorflow()
        result = measure_tf(args, args.mode)
    else:
        result = measure_torch(args, args.mode)
    result["peak_rss_gib"] = _rss_gib()
    print("RESULT " + json.dumps(result))


def child(args, framework, kind, mode, network, batch_norm="fused"):
    shape = [
        f"--{name}={getattr(args, name)}"
        for name in ("device", "steps", "batch_size", "input_size", "features", "num_stacks")
    ]
    command = [sys.executable, __file__, "--child", f"--framework={framework}", f"--kind={kind}", f"--mode={mode}",
               f"--tasks={NETWORKS[network]}", f"--batch_norm={batch_norm}", *shape]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"  {framework} {kind} {mode} {network}: failed\n{done.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def _over_rounds(results):
    """One result of several rounds (None where no round succeeded): the median speed, the highest peak memory (the
    counts of FLOPs and parameters are the same in every round)."""
    results = [r for r in results if r]
    if not results:
        return None
    return {
        key: (statistics.median if key.endswith("images_per_s") else max)(r[key] for r in results) for key in results[0]
    }


def measure_pair(args, frameworks, kind, mode, network, batch_norm="fused", peers=None):
    """(TensorFlow result, PyTorch result, {figure: TF/PyTorch ratio per round}, PyTorch's result per round) over
    `args.rounds` rounds, the two frameworks alternating within each round so that both see the same phase of a shared
    machine's drifting speed (speeds are medians over rounds; the ratios are taken round by round, so that drift between
    rounds cancels). `peers`: PyTorch's rounds of an earlier row to compare with instead of running it again (an XLA
    row against the same precision's PyTorch, which has no XLA)."""
    with_peer = "torch" in frameworks and batch_norm == "fused" and peers is None
    rounds = []
    for round_index in range(args.rounds):
        tf_result = child(args, "tf", kind, mode, network, batch_norm) if "tf" in frameworks else None
        if with_peer:
            peer = child(args, "torch", kind, mode, network)
        else:
            peer = peers[round_index] if peers else None
        rounds.append((tf_result, peer))
    ratios = {}
    for tf_result, torch_result in rounds:
        for key, rate in (tf_result or {}).items():
            peer_key = key.removeprefix("folded_")  # the exported network against PyTorch's one model too
            if key.endswith("images_per_s") and torch_result and peer_key in torch_result:
                ratios.setdefault(key, []).append(rate / torch_result[peer_key])
    peers = [r for _, r in rounds]
    return _over_rounds([r for r, _ in rounds]), _over_rounds(peers), ratios, peers


def print_row(network, what, tf_result, torch_result, key, passes, peak, ratios=()):
    """One table row. `passes`: the row's FLOPs per image in forward passes (a training step ~3); `peak`: FLOP/s of a
    GEMM in the row's precision, None where not measured; `ratios`: TF/PyTorch round by round (their median is the
    row's ratio, their range is printed where there are several)."""
    nan = float("nan")
    rate = tf_result[key] if tf_result else nan
    peer = torch_result[key] if torch_result else nan
    ratio = statistics.median(ratios) if ratios else nan
    spread = f"  ({min(ratios):.2f}-{max(ratios):.2f} in {len(ratios)} rounds)" if len(ratios) > 1 else ""
    flops = (tf_result or torch_result or {}).get("flops_per_image", nan)
    # TensorFlow's utilisation; PyTorch's where TensorFlow didn't run (a GPU machine without it).
    achieved = rate if tf_result else peer
    utilisation = 100 * passes * flops * achieved / peak if peak else nan
    memory = (tf_result or {}).get("peak_rss_gib", nan)
    device_memory = "/".join(f"{(r or {}).get('peak_device_gib', nan):.1f}" for r in (tf_result, torch_result))
    print(f"{network:8} {what:26} {rate:9.2f} {peer:9.2f} {ratio:6.2f} {memory:10.2f} {device_memory:>13} "
          f"{utilisation:6.1f}{spread}")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=5)
    parser.add_argument("--input_size", type=int, default=256)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--num_stacks", type=int, default=2)
    parser.add_argument("--networks", default="all,pose2d")
    parser.add_argument(
        "--xla", default="pose2d", help="networks also trained with XLA, in each precision (4 tasks on a CPU: ~9 GB)"
    )
    parser.add_argument("--keras_bn", default="pose2d", help="networks also trained with Keras' BatchNormalization")
    parser.add_argument(
        "--precisions",
        help="training precisions, of fp32, bf16 (on a CPU: only with avx512_bf16) and fp16 (GPU); "
        "default fp32,bf16 on the CPU, fp32,fp16,bf16 on a GPU",
    )
    parser.add_argument("--kinds", default="train,infer", help="what to measure: training steps, inference or both")
    parser.add_argument("--frameworks", default="tf,torch", help="tf, torch (the peer) or both")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="pairs of TF and PyTorch runs per row, alternating (medians; use 3+ on shared machines)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", help=argparse.SUPPRESS)
    parser.add_argument("--batch_norm", default="fused", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.child:
        return run_one(args)

    frameworks, kinds = args.frameworks.split(","), args.kinds.split(",")
    precisions = (args.precisions or ("fp32,bf16" if args.device == "cpu" else "fp32,fp16,bf16")).split(",")
    # The GEMM reference: on a GPU one process per framework (bench/gemm_peak.py says why), here one for all.
    peaks = {}
    for measured in frameworks if args.device == "gpu" else [",".join(frameworks)]:
        rates = child(args, "gemm", measured, "-", "pose2d") or {}
        rates.pop("peak_rss_gib", None)
        for precision, by_library in rates.items():
            peaks.setdefault(precision, {}).update(by_library)
    peak = {precision: max(rates.values()) for precision, rates in peaks.items()}
    print(f"{args.device}, {os.cpu_count()} CPU threads; GEMM peak per precision (best library):")
    for precision, rates in peaks.items():
        libraries = ", ".join(f"{library} {rate / 1e12:.3g}" for library, rate in rates.items())
        print(f"  {precision}: {peak[precision] / 1e12:.3g} TFLOP/s ({libraries})")
    print(f"batch {args.batch_size}, {args.input_size} px, {args.num_stacks} stacks, {args.features} features\n")
    print(f"{'network':8} {'what':26} {'TF img/s':>9} {'PyTorch':>9} {'TF/PT':>6} {'TF RSS GiB':>10} "
          f"{'GPU GiB TF/PT':>13} {'%peak':>6}")  # fmt: skip
    for network in args.networks.split(","):
        runs = [(mode, "fused") for mode in precisions]
        runs += [(f"{mode}+xla", "fused") for mode in precisions] if network in args.xla.split(",") else []
        runs += [(mode, "keras") for mode in precisions] if network in args.keras_bn.split(",") else []
        runs = runs if "train" in kinds else []
        described = None  # any result, for the network's FLOPs and parameters
        peer_rounds = {}  # precision: PyTorch's rounds of its row, the peer of the precision's XLA row too
        for mode, batch_norm in runs:
            precision, _, compiler = mode.partition("+")
            peers = peer_rounds.get(precision) if compiler else None
            tf_result, torch_result, ratios, peers = measure_pair(
                args, frameworks, "train", mode, network, batch_norm, peers
            )
            if batch_norm == "fused" and not compiler:
                peer_rounds[precision] = peers
            if tf_result or torch_result:
                what = f"train {mode}" + (", Keras BN" if batch_norm == "keras" else "")
                mode_peak = peak.get(precision)
                print_row(network, what, tf_result, torch_result, "images_per_s", 3, mode_peak,
                          ratios.get("images_per_s", ()))  # fmt: skip
            described = tf_result or torch_result or described
        if "infer" in kinds:
            tf_result, torch_result, ratios, _ = measure_pair(args, frameworks, "infer", "fp32", network)
            for prefix, batch in itertools.product(("", "folded_") if tf_result else ("",), (1, 32)):
                what = f"inference b{batch} fp32" + (", export" if prefix else "")
                key = f"batch{batch}_images_per_s"
                tf_row = tf_result and {**tf_result, key: tf_result[prefix + key]}
                print_row(network, what, tf_row, torch_result, key, 1, peak.get("fp32"), ratios.get(prefix + key, ()))
            described = tf_result or torch_result or described
        if described:
            parameters = f", parameters {described['parameters']:,}" if "parameters" in described else ""
            print(f"{network:8} forward GFLOP/image: {described['flops_per_image'] / 1e9:.1f}{parameters}")


if __name__ == "__main__":
    main()
