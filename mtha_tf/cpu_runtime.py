"""Process settings for training on CPUs, applied by the entry points before TensorFlow is imported.

Both are measured in docs/performance.md (2-core AMD EPYC, AVX2) and both yield to a value the user already set:

- oneDNN kernels (`TF_ENABLE_ONEDNN_OPTS=1`): TensorFlow turns them on by default only on CPUs with AVX-512 VNNI,
  BF16 or AMX; on AVX2 CPUs it falls back to Eigen's convolutions, which train the hourglass 10-17 % slower.
  TensorFlow reads the variable once, when it is imported.
- At most `MALLOC_ARENAS` glibc malloc arenas: by default glibc gives each of TensorFlow's many threads an arena of
  its own, and freed activations stay cached in all of them; the four-task step at batch 5 then peaks ~0.9 GiB higher
  (8.6 GiB instead of 7.7). glibc reads `MALLOC_ARENA_MAX` only when the process starts, so this process sets the
  limit with `mallopt` (before TensorFlow starts its threads) and exports the variable to its child processes.
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


def configure_before_tensorflow():
    """oneDNN kernels and the malloc arena limit; must run before the first `import tensorflow`."""
    if "tensorflow" in sys.modules:
        raise RuntimeError("cpu_runtime.configure_before_tensorflow() must run before TensorFlow is imported")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    limit_malloc_arenas()
