"""train.py's process settings: oneDNN kernels, the malloc arena limit and threads per op, unless the user chose
otherwise."""

import os
import pathlib
import platform
import subprocess
import sys

import pytest

from mtha_tf import cpu_runtime

REPO = pathlib.Path(__file__).resolve().parents[1]
# Appended to each probe: the settings its process ended up with.
REPORT = """
from tensorflow.python.util import _pywrap_util_port
print(started, _pywrap_util_port.IsMklEnabled(), os.environ["MALLOC_ARENA_MAX"], os.environ["TF_NUM_INTRAOP_THREADS"])
"""
TRAIN_PROBE = """
import os, sys
sys.path.insert(0, sys.argv[1])
import train  # noqa: F401  (its imports configure the process, as `python train.py` does)
started = "tensorflow" in sys.modules
"""
STUDY_PROBE = """
import os, runpy, sys
from absl import app
app.run = lambda main: None  # the module's top level as `python -m mtha_tf.study` runs it, without starting a study
sys.path.insert(0, sys.argv[1])
runpy.run_module("mtha_tf.study", run_name="__main__")
started = False
"""


def _probe(script, **environment):
    """(TensorFlow started by the import, oneDNN on, malloc arenas, threads per op) as a fresh process running
    `script` sees them."""
    settings = ("TF_ENABLE_ONEDNN_OPTS", "MALLOC_ARENA_MAX", "TF_NUM_INTRAOP_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in settings}
    env.update(environment, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script + REPORT, str(REPO)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    started, onednn, arenas, threads = done.stdout.split()[-4:]
    return started == "True", onednn == "True", int(arenas), int(threads)


def _has_training_settings(onednn, arenas, threads):
    # TensorFlow's x86 wheels carry oneDNN; on other CPUs the variable may have no kernels to turn on.
    onednn_expected = onednn or platform.machine().lower() not in ("x86_64", "amd64")
    return onednn_expected and arenas == cpu_runtime.MALLOC_ARENAS and threads == cpu_runtime.intra_op_threads()


def test_train_py_turns_on_onednn_and_limits_malloc_arenas_before_tensorflow_starts():
    started, *settings = _probe(TRAIN_PROBE)
    assert _has_training_settings(*settings)
    # The data generator's spawned workers import train.py as their main module: importing it must not start
    # TensorFlow (seconds per worker), only running it.
    assert not started


def test_the_study_entry_point_trains_with_the_same_settings():
    _, *settings = _probe(STUDY_PROBE)
    assert _has_training_settings(*settings)


def test_the_users_environment_wins():
    _, onednn, arenas, threads = _probe(TRAIN_PROBE, TF_ENABLE_ONEDNN_OPTS="0", MALLOC_ARENA_MAX="6",
                                        TF_NUM_INTRAOP_THREADS="3")  # fmt: skip
    assert not onednn and arenas == 6 and threads == 3


def test_configuring_after_tensorflow_is_imported_is_an_error():
    import tensorflow  # noqa: F401

    with pytest.raises(RuntimeError, match="before TensorFlow is imported"):
        cpu_runtime.configure_before_tensorflow()
