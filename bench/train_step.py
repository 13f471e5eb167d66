r"""Training and inference speed of the networks in TensorFlow against a PyTorch copy, and against the machine's limit.

    python bench/train_step.py [--device=cpu|gpu] [--steps=5] [--batch_size=5] [--input_size=256] [--features=256]
                               [--num_stacks=2] [--networks=all,pose2d] [--precisions=fp32,bf16] [--xla=pose2d]
                               [--keras_bn=pose2d] [--kinds=train,infer] [--frameworks=tf,torch] [--rounds=1]

Needs `pip install -e .` and, for the peer, `pip install torch==2.13.0` (CPU wheel; on a GPU machine a CUDA build).
Every figure comes from its own subprocess (bench/step_measurements.py; same thread count: all cores), so peak memory
is per configuration; --rounds=N alternates N such pairs of TensorFlow and PyTorch runs per row and prints medians and
the ratios' range (on a shared virtual machine one pair's ratio moved by +-20 %).
On the CPU, TensorFlow trains with train.py's process settings (mtha_tf/cpu_runtime.py: oneDNN kernels, 2 malloc arenas,
half the cores per op) and infers with those of the inference entry points (oneDNN kernels, weights reordered once); the
environment overrides both (TF_ENABLE_ONEDNN_OPTS=0 measures TensorFlow's default Eigen kernels on AVX2 CPUs). Training:
images/s of one optimizer step (RMSprop, the paper's losses, random inputs and targets of the right shapes: the input
pipeline is measured by bench/input_pipeline.py) with tf.function and in mixed precision (bf16: mixed_bfloat16 against
PyTorch's bf16 autocast; fp16, on a GPU: mixed_float16 with Keras' loss scaling against fp16 autocast with a
GradScaler), beside PyTorch (channels-last); the TF/PyTorch ratio pair by pair. For the networks in --xla, also with XLA
(`jit_compile`) in each precision (rows "fp32+xla", "fp16+xla"), against the same precision's PyTorch rounds (eager:
PyTorch has no XLA). On a GPU, "fp32" is each framework's default: TF32 tensor cores for convolutions in both.
Inference: images/s at batch 1 and 32, fp32, of the Keras model and of the exported network (rows "export": batch norms
folded into the convolutions, export/fold_batch_norm.py) against PyTorch's eval mode. The limit: model FLOPs per image
(convolutions; a training step is ~3x the forward pass) and the achieved FLOP/s as a percentage of a GEMM peak of the
same precision measured in the same run (bench/gemm_peak.py); column "1.3x at": the percentage of that peak TensorFlow
would have to reach for 1.3x PyTorch's (median) images/s. For the networks in --keras_bn, training is also measured with
Keras' own BatchNormalization in place of the fused layer, the reference for what fused_batch_norm.py gains.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys

from arguments import add_shape_arguments, comma_list, positive_int  # beside this file, on sys.path as a script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGET_RATIO = 1.3  # the performance issue's target: TensorFlow at 1.3x PyTorch's images/s
NETWORKS = {"all": "pose2d,segmentation,depth,pose3d", "pose2d": "pose2d"}


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


# How each framework says it sees a GPU, asked in a process of its own (as every measurement runs).
GPU_PROBES = {
    "tf": ("import tensorflow as tf; print(bool(tf.config.list_physical_devices('GPU')))", "tensorflow[and-cuda]"),
    "torch": ("import torch; print(torch.cuda.is_available())", "a CUDA build of torch==2.13.0"),
}


def frameworks_without_gpu(frameworks):
    """Those of `frameworks` that see no GPU: without this check --device=gpu ran TensorFlow's 8192^3 GEMM reference on
    the CPU, silently for many minutes (a lent GPU's whole budget), before the first measurement failed."""
    probes = {framework: GPU_PROBES[framework] for framework in frameworks}
    seen = {framework: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
            for framework, (code, _) in probes.items()}  # fmt: skip
    return [f"{framework} (install {probes[framework][1]})" for framework, answer in seen.items() if answer != "True"]


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
    # What the issue's target (1.3x PyTorch) asks of TensorFlow in the same units: above ~85 % (the convolutions' own
    # rate against the GEMM's), the target is out of reach of any graph of these FLOPs on this machine.
    needed = 100 * TARGET_RATIO * passes * flops * peer / peak if peak else nan
    memory = (tf_result or {}).get("peak_rss_gib", nan)
    # Device memory exists on a GPU only: a CPU run prints "-/-" rather than "nan/nan".
    device = ((r or {}).get("peak_device_gib") for r in (tf_result, torch_result))
    device_memory = "/".join("-" if gib is None else f"{gib:.1f}" for gib in device)
    print(f"{network:8} {what:26} {rate:9.2f} {peer:9.2f} {ratio:6.2f} {memory:10.2f} {device_memory:>13} "
          f"{utilisation:6.1f} {needed:8.1f}{spread}")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--steps", type=positive_int, default=5)
    add_shape_arguments(parser)
    networks = comma_list(*NETWORKS)
    parser.add_argument("--networks", type=networks, default="all,pose2d")
    parser.add_argument(
        "--xla",
        type=networks,
        default="pose2d",
        help="networks also trained with XLA, in each precision (4 tasks on a CPU: ~9 GB)",
    )
    parser.add_argument("--keras_bn", type=networks, default="pose2d", help="networks also trained with Keras' "
                        "BatchNormalization")  # fmt: skip
    parser.add_argument(
        "--precisions",
        type=comma_list("fp32", "bf16", "fp16"),
        help="training precisions, of fp32, bf16 (on a CPU: only with avx512_bf16) and fp16 (GPU); "
        "default fp32,bf16 on the CPU, fp32,fp16,bf16 on a GPU",
    )
    parser.add_argument("--kinds", type=comma_list("train", "infer"), default="train,infer",
                        help="what to measure: training steps, inference or both")  # fmt: skip
    parser.add_argument("--frameworks", type=comma_list("tf", "torch"), default="tf,torch",
                        help="tf, torch (the peer) or both")  # fmt: skip
    parser.add_argument(
        "--rounds",
        type=positive_int,
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
    if args.child:
        from step_measurements import run_one

        return run_one(args)

    frameworks, kinds = args.frameworks, args.kinds
    if args.device == "gpu" and (blind := frameworks_without_gpu(frameworks)):
        print(f"error: --device=gpu, but no GPU is seen by {', '.join(blind)}", file=sys.stderr)
        return 2
    precisions = args.precisions or (["fp32", "bf16"] if args.device == "cpu" else ["fp32", "fp16", "bf16"])
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
          f"{'GPU GiB TF/PT':>13} {'%peak':>6} {'1.3x at':>8}")  # fmt: skip
    for network in args.networks:
        runs = [(mode, "fused") for mode in precisions]
        runs += [(f"{mode}+xla", "fused") for mode in precisions] if network in args.xla else []
        runs += [(mode, "keras") for mode in precisions] if network in args.keras_bn else []
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
                print_row(network, what, tf_result, torch_result, "images_per_s", 3, peak.get(precision),
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
    sys.exit(main())
