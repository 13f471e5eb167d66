"""Training distributed: a cluster from TF_CONFIG (MultiWorkerMirroredStrategy) and several devices of one machine
(MirroredStrategy, with two logical CPUs standing in for two GPUs)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtha_tf import config as config_lib
from mtha_tf import trainer
from mtha_tf.model import build_model_for
from tests.conftest import REPO


def _worker_env(cluster, index):
    """The environment of worker `index` of a loopback cluster, on CPU."""
    task = {"type": "worker", "index": index}
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                TF_CONFIG=json.dumps({"cluster": cluster, "task": task}))  # fmt: skip


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


ONE_WORKER = '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": %s}}'


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{bad", "TF_CONFIG: not JSON"),
        (ONE_WORKER % '"worker", "index": 3', "TF_CONFIG: task index 3 is not one of the 1 worker addresses"),
        (ONE_WORKER % '"ps", "index": 0', "is not of a job in the cluster"),
        ("[1]", "TF_CONFIG: expected {"),
    ],
)
def test_a_bad_tf_config_is_named_before_anything_is_written(tf_config, message, tmp_path, monkeypatch):
    """A cluster launcher's mistake is an error naming TF_CONFIG (train.py: `error: ...`, exit 1), not a traceback from
    tf.distribute after the work dir was made."""
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(trainer.TrainingFailed, match=re.escape(message)):
        trainer.train(config_lib.make_config("tiny"), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_two_workers_on_loopback_finish_with_identical_weights(tmp_path):
    """MultiWorkerMirroredStrategy through TF_CONFIG: two local processes train a few synchronised steps."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workdir = tmp_path / "run"
    processes = []
    for index in range(2):
        env = _worker_env(cluster, index)
        command = [sys.executable, str(REPO / "train.py"), f"--workdir={workdir}", "--preset=tiny", "--epochs=1",
                   "--steps_per_epoch=3", "--tasks=depth", "--noexport"]  # fmt: skip
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for process, log in processes:
        try:
            process.wait(timeout=420)
        finally:
            process.kill()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert [p.returncode for p, _ in processes] == [0, 0], logs

    def variables(checkpoint_dir):
        """Everything the worker saved: weights, BatchNorm moving averages, optimizer slots, step counter."""
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(checkpoint_dir)))
        names = [n for n in reader.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
        return {n: reader.get_tensor(n) for n in names}

    chief, other = variables(workdir / "checkpoints"), variables(workdir / "worker-1" / "checkpoints")
    assert chief.keys() == other.keys()
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    model = build_model_for(config_lib.make_config("tiny", tasks="depth"))
    trainable = sum(w.numpy().size for w in model.trainable_weights)
    assert sum(v.size for v in chief.values()) > model.count_params() + trainable, "weights and optimizer slots"
    assert (workdir / "metrics.json").exists() and not (workdir / "worker-1" / "metrics.json").exists()
    assert not (workdir / "export").exists(), "--noexport"


def test_one_worker_cluster_trains_on_converted_shards_in_mixed_precision(tmp_path, records_dir):
    """A one-task TF_CONFIG with --data_dir and --mixed_precision: both read TensorFlow's devices or files before the
    strategy existed, which MultiWorkerMirroredStrategy refuses ("Collective ops must be configured at program
    startup"), and one worker's step logs were [1] vectors that the NaN guard could not read."""
    cluster = {"worker": [f"127.0.0.1:{_free_ports(1)[0]}"]}
    env = _worker_env(cluster, 0)
    command = [sys.executable, str(REPO / "train.py"), f"--workdir={tmp_path / 'run'}", f"--data_dir={records_dir}",
               "--preset=tiny", "--tasks=depth", "--epochs=1", "--steps_per_epoch=2", "--mixed_precision",
               "--noexport"]  # fmt: skip
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == "mixed_bfloat16" and metrics["held_out"].startswith(str(records_dir))
    assert "held-out   trained: depth_rmse_mm" in finished.stdout
    # The same shards at another path (a node that mounts the data elsewhere) are the run's data: it trains on from
    # its checkpoint there, and config.json names the new path. Compared before the strategy exists (files only).
    moved = tmp_path / "moved"
    shutil.copytree(records_dir, moved)
    command = [arg.replace(f"--data_dir={records_dir}", f"--data_dir={moved}").replace("--epochs=1", "--epochs=2")
               for arg in command]  # fmt: skip
    env = _worker_env({"worker": [f"127.0.0.1:{_free_ports(1)[0]}"]}, 0)
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Epoch 2/2" in finished.stdout and "Epoch 1/2" not in finished.stdout, "trained on from epoch 1"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == str(moved)


def test_two_replicas_take_the_one_device_step_and_train_end_to_end(tmp_path):
    """MirroredStrategy over two logical CPUs (the multi-GPU code path): the same batch split over two replicas
    updates the weights as one device does (gradients all-reduced and scaled, batch norms synchronised over the whole
    batch, the moving variance unbiased as on one device); train() refuses a batch that does not split evenly and
    runs to its held-out metrics and export."""
    command = [sys.executable, "-m", "tests.two_replicas", str(tmp_path)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    assert finished.returncode == 0, finished.stderr[-3000:]
    findings = json.loads(finished.stdout.strip().splitlines()[-1])
    assert findings["replicas"] == 2
    errors = findings["errors"]
    moving = {name: error for name, error in errors.items() if "/moving_" in name}
    learned = sorted(error for name, error in errors.items() if name not in moving)
    assert len(moving) > 100 and len(learned) > 150
    # Rounding alone moves single updates by up to a few % (the same batch on one device with Keras' batch norm
    # instead of the fused one does too); a missing all-reduce, a wrong loss scale or per-replica statistics move
    # most of them by 10-100 %, a biased moving variance by 1.6 % or more.
    assert np.median(learned) < 0.02 and learned[int(0.9 * len(learned))] < 0.1, learned[-10:]
    worst = max(moving, key=moving.get)
    assert moving[worst] < 2e-3, (worst, moving[worst])
    assert findings["uneven_batch"].startswith("--batch_size=5 does not split evenly over the 2 replicas")
    assert "--batch_size=4 or --batch_size=6" in findings["uneven_batch"]
    assert not (tmp_path / "uneven").exists(), "refused before the work dir was written"
    assert findings["trained"]["num_frames"] > 0 and findings["trained"]["depth"]["rmse_mm"] > 0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / "export" / "1" / "saved_model.pb").exists()
