"""Process settings for CPUs, applied by the entry points before TensorFlow is imported: one set for processes that
train (train.py, `python -m mtha_tf.study`), one for processes that only infer (`python -m export.local_server`,
`python -m mtha_tf.evaluate`). All are measured in docs/performance.md (2-core AMD EPYC, AVX2) and all yield to a
value the user already set.

Training:
- oneDNN kernels (`TF_ENABLE_ONEDNN_OPTS=1`): TensorFlow turns them on by default only on CPUs with AVX-512 VNNI,
  BF16 or AMX; on AVX2 CPUs it falls back to Eigen's convolutions, which train the hourglass 10-17 % slower.
  TensorFlow reads the variable once, when it is imported.
- At most `MALLOC_ARENAS` glibc malloc arenas: by default glibc gives each of TensorFlow's many threads an arena of
  its own, and freed activations stay cached in all of them; the four-task step at batch 5 then peaks ~0.9 GiB higher
  (8.6 GiB instead of 7.7). glibc reads `MALLOC_ARENA_MAX` only when the process starts, so this process sets the
  limit with `mallopt` (before TensorFlow starts its threads) and exports the variable to its child processes.
- Half the cores per op (`TF_NUM_INTRAOP_THREADS`): TensorFlow runs independent ops side by side on its inter-op
  threads (one per core), and by default each of them also asks for every core, so the cores are oversubscribed.
  The hourglass has several ops ready at most moments (four task streams, skip branches, weight gradients), and with
  two ops at a time on half the cores each, the `small` preset trained 1.15-1.48x faster and the paper's networks
  1.04-1.08x on 2 cores. Measured on 2 cores only, and host-dependent (session 10's host trained pose2d alone
  faster with TensorFlow's default); `TF_NUM_INTRAOP_THREADS` overrides it.

Inference (serving, evaluation):
- oneDNN kernels with the weights taken as frozen (`TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`): each convolution then
  reorders its kernel into oneDNN's blocked layout once, at the first call, instead of at every call. That per-call
  reorder is most of why oneDNN alone served batch 1 at half Eigen's speed; without it batch 1 is level with Eigen and
  batch 32 1.4-1.6x faster. Only where weights do not change after the first forward pass (a training process would
  go on convolving with the first step's kernels) and every forward pass runs as a graph (a SavedModel's signatures,
  a tf.function): eagerly, TensorFlow reuses one kernel object for every op of the same attributes, and the second of
  two same-shaped convolutions then returns the first one's result (`mtha_tf.evaluate` calls its model only through
  `evaluation.forward_function`).
- TensorFlow's default threads per op: a forward pass has fewer independent ops than a training step, and at batch 1
  one op on all cores served 1.2-1.6x faster than half the cores each.
"""

import ctypes
import ctypes.util
import os
import sys

MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas=MALLOC_ARENAS):
    """Caps glibc's malloc arenas for this process and its children; False where there is no glibc (nothing done)."""
    arenas = int(os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas)))
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False


def intra_op_threads():
    """Threads per op: half the cores this process may run on (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // 2)


def has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16: mixed_bfloat16 trained the `small` preset
    1.6-1.8x faster than fp32 there; elsewhere TensorFlow emulates it, ~10x slower); None where unknown (no
    /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _before_tensorflow(function_name):
    if "tensorflow" in sys.modules:
        raise RuntimeError(f"cpu_runtime.{function_name}() must run before TensorFlow is imported")


def configure_for_training():
    """oneDNN kernels, the malloc arena limit and threads per op; must run before the first `import tensorflow`."""
    _before_tensorflow("configure_for_training")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(intra_op_threads()))
    limit_malloc_arenas()


def configure_for_serving():
    """oneDNN kernels that reorder each (frozen) weight once; must run before the first `import tensorflow`, and only
    in a process that runs its forward passes as graphs and never changes the weights after the first one."""
    _before_tensorflow("configure_for_serving")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")
