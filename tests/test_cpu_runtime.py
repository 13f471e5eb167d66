"""The entry points' process settings: oneDNN kernels, the malloc arena limit and threads per op for training; oneDNN
with frozen weights for serving and evaluation; unless the user chose otherwise."""

import json
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np
import pytest

from mtha_tf import cpu_runtime

REPO = pathlib.Path(__file__).resolve().parents[1]
SETTINGS = ("TF_ENABLE_ONEDNN_OPTS", "MALLOC_ARENA_MAX", "TF_NUM_INTRAOP_THREADS", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS")
# TensorFlow's x86 wheels carry oneDNN; on other CPUs the variable may have no kernels to turn on.
X86 = platform.machine().lower() in ("x86_64", "amd64")
# Appended to each probe: the settings its process ended up with.
REPORT = """
import json
from tensorflow.python.util import _pywrap_util_port
settings = {name: value for name, value in os.environ.items() if name.startswith(("TF_", "MALLOC_"))}
print(json.dumps({"started": started, "onednn": _pywrap_util_port.IsMklEnabled(), **settings}))
"""
TRAIN_PROBE = """
import os, sys
sys.path.insert(0, sys.argv[1])
import train  # noqa: F401  (its imports configure the process, as `python train.py` does)
started = "tensorflow" in sys.modules
"""
# The module's top level as `python -m <module>` runs it, without starting the program.
MAIN_MODULE_PROBE = """
import os, runpy, sys
from absl import app
app.run = lambda main: None
sys.path.insert(0, sys.argv[1])
runpy.run_module(%r, run_name="__main__")
started = False
"""
# A tiny two-task network's outputs at batch 1, then 3, then 1 again, in one traced function (as a SavedModel's
# signature runs it): the first call reorders and caches each kernel when the weights are taken as frozen.
OUTPUTS_PROBE = """
import os, sys
sys.path.insert(0, sys.argv[1])
import keras, numpy as np, tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
from mtha_tf.model import build_model
keras.utils.set_random_seed(0)
model = build_model(("pose2d", "segmentation"), num_stacks=1, features=16, input_size=64, hourglass_depth=2)
weights = sys.argv[2]
model.load_weights(weights) if os.path.exists(weights) else model.save_weights(weights)
forward = tf.function(lambda x: model({"image": x}, training=False))
rng = np.random.default_rng(0)
outputs = [forward(rng.normal(size=(n, 64, 64, 3)).astype("float32")) for n in (1, 3, 1)]
np.savez(sys.argv[3], onednn=_pywrap_util_port.IsMklEnabled(),
         **{f"{i}_{task}": y[task].numpy() for i, y in enumerate(outputs) for task in y})
"""


def _run_python(script, *args, **environment):
    """Standard output of a fresh Python process running `script` with the repository and `args` as its arguments,
    in this environment without the settings under test plus `environment`."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(environment, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script, str(REPO), *map(str, args)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _probe(script, **environment):
    """{"started": TensorFlow started by the import, "onednn": its oneDNN kernels on, and the environment's settings}
    as a fresh process running `script` sees them."""
    return json.loads(_run_python(script + REPORT, **environment).splitlines()[-1])


def _has_training_settings(seen):
    return (
        (seen["onednn"] or not X86)
        and seen.get("MALLOC_ARENA_MAX") == str(cpu_runtime.MALLOC_ARENAS)
        and seen.get("TF_NUM_INTRAOP_THREADS") == str(cpu_runtime.intra_op_threads())
        # A training process must not take its weights as frozen: it would keep convolving with the first step's.
        and seen.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS") is None
    )


def test_train_py_turns_on_onednn_and_limits_malloc_arenas_before_tensorflow_starts():
    seen = _probe(TRAIN_PROBE)
    assert _has_training_settings(seen), seen
    # The data generator's spawned workers import train.py as their main module: importing it must not start
    # TensorFlow (seconds per worker), only running it.
    assert not seen["started"]


def test_the_study_entry_point_trains_with_the_same_settings():
    seen = _probe(MAIN_MODULE_PROBE % "mtha_tf.study")
    assert _has_training_settings(seen), seen


# Safe for these two because every forward pass they run is a graph's (a SavedModel's signatures; the evaluation's
# one tf.function, which `evaluation.evaluate` and the prediction grid take instead of the model): eagerly, frozen
# weights would be shared among same-shaped convolutions.
@pytest.mark.parametrize("module", ["export.local_server", "mtha_tf.evaluate"])
def test_inference_entry_points_take_weights_as_frozen_and_keep_the_default_threads(module):
    seen = _probe(MAIN_MODULE_PROBE % module)
    assert seen["onednn"] or not X86, seen
    assert seen.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS") == "1", seen
    assert seen.get("TF_NUM_INTRAOP_THREADS") is None and seen.get("MALLOC_ARENA_MAX") is None, seen


def test_the_users_environment_wins():
    seen = _probe(TRAIN_PROBE, TF_ENABLE_ONEDNN_OPTS="0", MALLOC_ARENA_MAX="6", TF_NUM_INTRAOP_THREADS="3")
    assert not seen["onednn"] and seen.get("MALLOC_ARENA_MAX") == "6" and seen.get("TF_NUM_INTRAOP_THREADS") == "3"
    seen = _probe(MAIN_MODULE_PROBE % "export.local_server", TF_ENABLE_ONEDNN_OPTS="0")
    assert not seen["onednn"]


def _outputs(tmp_path, name, **environment):
    path = tmp_path / f"{name}.npz"
    _run_python(OUTPUTS_PROBE, tmp_path / "weights.weights.h5", path, **environment)
    return dict(np.load(path))


def test_serving_settings_predict_what_tensorflows_defaults_predict(tmp_path):
    reference = _outputs(tmp_path, "default", TF_ENABLE_ONEDNN_OPTS="0")
    frozen = _outputs(tmp_path, "frozen", TF_ENABLE_ONEDNN_OPTS="1", TF_ONEDNN_ASSUME_FROZEN_WEIGHTS="1")
    assert frozen.pop("onednn") or not X86
    assert not reference.pop("onednn")
    assert sorted(frozen) == sorted(reference)
    for key, expected in reference.items():  # every batch size, the cached kernels included
        scale = np.abs(expected).max()
        np.testing.assert_allclose(frozen[key], expected, rtol=0, atol=1e-4 * scale, err_msg=key)


@pytest.mark.parametrize("configure", [cpu_runtime.configure_for_training, cpu_runtime.configure_for_serving])
def test_configuring_after_tensorflow_is_imported_is_an_error(configure):
    import tensorflow  # noqa: F401

    with pytest.raises(RuntimeError, match="before TensorFlow is imported"):
        configure()


def test_mixed_precision_on_a_cpu_without_native_bfloat16_says_it_is_emulated(tmp_path, monkeypatch, capsys):
    """mixed_bfloat16 is ~10x slower than float32 where the CPU lacks AVX512-BF16 and AMX (TensorFlow emulates it),
    1.6-1.8x faster where it has them: a run with --mixed_precision on the first kind says so."""
    from mtha_tf import trainer

    real_reader = cpu_runtime.has_native_bfloat16
    amd = tmp_path / "avx2"
    amd.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    intel = tmp_path / "amx"
    intel.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_runtime.has_native_bfloat16(str(amd)) is False and cpu_runtime.has_native_bfloat16(str(intel)) is True
    assert cpu_runtime.has_native_bfloat16(str(tmp_path / "absent")) is None  # not Linux: no note
    try:
        for cpuinfo, noted in ((amd, True), (intel, False), (tmp_path / "absent", False)):
            monkeypatch.setattr(cpu_runtime, "has_native_bfloat16", lambda c=str(cpuinfo): real_reader(c))
            assert trainer.set_precision(True) == "mixed_bfloat16"
            assert ("computes in emulated bfloat16" in capsys.readouterr().err) is noted
    finally:
        trainer.set_precision(False)
