"""The reference for "% of peak": the fastest square matrix product this process can run, per precision and device.

A network can't run its convolutions faster than the machine multiplies large matrices, so the benchmarks report the
achieved FLOP/s as a share of this figure, measured in the same run (a machine's speed varies run to run).

- CPU: fp32, the best of TensorFlow's and NumPy's BLAS at 2048^3 and 4096^3 (TensorFlow's Eigen matmul trails
  OpenBLAS on some CPUs; the reference is the fastest GEMM, not one library's). bf16 too where the CPU multiplies
  bfloat16 natively (AVX512-BF16 or AMX: `cpu_runtime.has_native_bfloat16`), the best of TensorFlow's and PyTorch's
  oneDNN matmul (on 2 cores of a Sapphire Rapids VM: 1.4-1.9 TFLOP/s with AMX against 0.3-0.37 in fp32); elsewhere
  bf16 is emulated and has no peak worth a percentage.
- GPU: fp32 as the frameworks run it by default (TensorFlow and PyTorch's cuDNN convolutions both use TF32 tensor
  cores on Ampere and later), fp16 and bf16, at 4096^3 and 8192^3, by the frameworks asked for. Measure one framework
  per process there: TensorFlow reserves nearly all of the GPU's memory when it starts, and a process that had
  imported both crashed on an H200 without a Python traceback (session 7).
"""

import importlib.util
import os
import time

import numpy as np

from mtha_tf import cpu_runtime


def _rate(run, sync, size, repeats):
    """FLOP/s of `run` (one size x size product); `sync(result)` waits until the device has computed it."""
    sync(run())
    start = time.perf_counter()
    for _ in range(repeats):
        result = run()
    sync(result)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def _best(rate_of, precisions, sizes):
    """{precision: the best FLOP/s over the sizes}, `rate_of(precision, size)` measuring one."""
    return {precision: max(rate_of(precision, size) for size in sizes) for precision in precisions}


def _numpy_rates(sizes, repeats):
    def rate_of(_, size):
        a = np.random.default_rng(0).random((size, size), np.float32)
        return _rate(lambda: a @ a, lambda _: None, size, repeats)

    return _best(rate_of, ("fp32",), sizes)


def _tensorflow_rates(precisions, sizes, repeats, device):
    import tensorflow as tf

    dtypes = {"fp32": tf.float32, "fp16": tf.float16, "bf16": tf.bfloat16}

    def rate_of(precision, size):
        with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
            a = tf.cast(tf.random.normal((size, size)), dtypes[precision])
            product = tf.function(lambda: tf.matmul(a, a))
            # One element back to the host waits for every product before it (one stream, in order).
            return _rate(product, lambda result: result[0, 0].numpy(), size, repeats)

    return _best(rate_of, precisions, sizes)


def _torch_rates(precisions, sizes, repeats, device):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True  # what cuDNN's convolutions use by default
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    on_gpu = device == "gpu"
    if not on_gpu:
        torch.set_num_threads(os.cpu_count())  # all cores, as the bench's PyTorch children

    def rate_of(precision, size):
        a = torch.randn(size, size, device="cuda" if on_gpu else "cpu", dtype=dtypes[precision])
        return _rate(lambda: a @ a, lambda _: torch.cuda.synchronize() if on_gpu else None, size, repeats)

    return _best(rate_of, precisions, sizes)


def measure(device="cpu", frameworks=("tf", "torch"), repeats=5):
    """{precision: {library: FLOP/s}} for those of `frameworks` installed (and NumPy on a CPU). On a CPU, fp32 from
    TensorFlow and NumPy (PyTorch's fp32 CPU matmul is the same oneDNN/BLAS class), and bf16 from TensorFlow and PyTorch
    where the CPU has it natively."""
    has = {name: framework in frameworks and importlib.util.find_spec(name) is not None
           for name, framework in (("tensorflow", "tf"), ("torch", "torch"))}  # fmt: skip
    by_library = {}
    if device == "cpu":
        by_library["numpy"] = _numpy_rates((2048, 4096), repeats)
        bf16 = ("bf16",) if cpu_runtime.has_native_bfloat16() else ()
        if has["tensorflow"]:
            by_library["tensorflow"] = _tensorflow_rates(("fp32", *bf16), (2048, 4096), repeats, device)
        if has["torch"] and bf16:
            by_library["torch"] = _torch_rates(bf16, (2048, 4096), repeats, device)
    else:
        precisions, sizes = ("fp32", "fp16", "bf16"), (4096, 8192)
        if has["tensorflow"]:
            by_library["tensorflow"] = _tensorflow_rates(precisions, sizes, 4 * repeats, device)
        if has["torch"]:
            by_library["torch"] = _torch_rates(precisions, sizes, 4 * repeats, device)
    peaks = {}
    for library, rates in by_library.items():
        for precision, rate in rates.items():
            peaks.setdefault(precision, {})[library] = rate
    return peaks
