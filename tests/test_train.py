"""train.py end to end at tiny scale: what the work dir holds, kill -9 and resume, training on, NaN guard, bad input."""

import csv
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtha_tf import config as config_lib
from mtha_tf import evaluate, evaluation, losses, trainer
from mtha_tf.callbacks import EpochCheckpoint, EvaluationCallback, TensorBoard, TerminateOnNaN, history_logger
from tests.conftest import REPO, held_by_another_process, random_batch

TINY_RUN = ["--preset=tiny", "--epochs=3", "--steps_per_epoch=2"]


def _train_command(workdir, *extra):
    return [sys.executable, str(REPO / "train.py"), f"--workdir={workdir}", *TINY_RUN, *extra]


def _checkpoint_epoch(workdir):
    state = workdir / "checkpoints" / "checkpoint"
    if not state.exists():
        return 0
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Starts a tiny run, SIGKILLs it once the first epoch is saved, and runs the same command again."""
    workdir = tmp_path_factory.mktemp("run")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    # Every 4th frame of the held-out clip (frames 0, 2, 4 at the tiny preset's conversion stride) is evaluated.
    command = _train_command(workdir, "--eval_frame_stride=4")
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 400
    while _checkpoint_epoch(workdir) < 1 and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    killed_at = _checkpoint_epoch(workdir)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return workdir, killed_at, second


def test_a_killed_run_resumes_from_its_last_epoch(killed_and_resumed):
    workdir, killed_at, second = killed_and_resumed
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert 1 <= killed_at < 3, "the kill landed after the first saved epoch and before the end"
    assert f"Epoch {killed_at + 1}/3" in second.stdout and "Epoch 1/3" not in second.stdout
    # Output to a pipe or file (a cluster job's log): a line per epoch, not the terminal's bar redrawn at every step.
    assert "\r" not in second.stdout and "\x1b[" not in second.stdout
    assert len([line for line in second.stdout.splitlines() if "/step - " in line]) == 3 - killed_at
    assert _checkpoint_epoch(workdir) == 3
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(workdir / "checkpoints")))
    iterations = [k for k in reader.get_variable_to_shape_map() if "iterations" in k]
    assert iterations and reader.get_tensor(iterations[0]) == 3 * 2, "optimizer state carried across the kill"


def test_a_work_dir_of_another_configuration_is_refused_untouched(killed_and_resumed):
    workdir, _, _ = killed_and_resumed
    before = {name: (workdir / name).read_bytes() for name in ("config.json", "metrics.json")}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    other = subprocess.run(_train_command(workdir, "--tasks=pose2d"), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert other.returncode == 1, other.stdout[-3000:] + other.stderr[-3000:]
    assert f"error: {workdir / 'config.json'} describes another configuration (tasks: " in other.stderr
    assert "-> 'pose2d'); use another --workdir" in other.stderr
    assert {name: (workdir / name).read_bytes() for name in before} == before


def test_a_finished_run_trains_on_to_more_epochs(killed_and_resumed, tmp_path):
    """With the constant learning rate, --epochs=4 on a finished 3-epoch run trains the fourth epoch from the last
    checkpoint and exports it as version 4 beside version 3 (TF Serving serves the newer); fewer epochs, or more under
    a cosine schedule (it spans the run), are another configuration."""
    workdir = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0], workdir)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # With every other held-out frame evaluated now (4th before): the untrained figures are made again on those frames.
    first_untrained = json.loads((workdir / "metrics_untrained.json").read_text())
    longer = subprocess.run(_train_command(workdir, "--epochs=4", "--eval_frame_stride=2"), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert longer.returncode == 0, longer.stdout[-3000:] + longer.stderr[-3000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["trained"]["frame_stride"] == metrics["untrained"]["frame_stride"] == 2
    assert metrics["trained"]["num_frames"] == metrics["untrained"]["num_frames"] == 3, "frames 0, 2 and 4"
    assert metrics["untrained"] == json.loads((workdir / "metrics_untrained.json").read_text()) != first_untrained
    assert "Epoch 4/4" in longer.stdout and "Epoch 3/4" not in longer.stdout
    assert _checkpoint_epoch(workdir) == 4 and json.loads((workdir / "metrics.json").read_text())["epochs"] == 4
    assert sorted(p.name for p in (workdir / "export").iterdir() if p.name.isdigit()) == ["3", "4"]
    saved = config_lib.load(str(workdir / "config.json"))
    assert saved.epochs == 4
    assert config_lib.training_differences(saved, dataclasses.replace(saved, epochs=3)) == ["epochs: 4 -> 3"]
    cosine = dataclasses.replace(saved, lr_schedule="cosine")
    [difference] = config_lib.training_differences(cosine, dataclasses.replace(cosine, epochs=5))
    assert difference.startswith("epochs: 4 -> 5 (") and "a cosine schedule spans the run" in difference


def test_the_work_dir_holds_everything_a_run_makes(killed_and_resumed):
    workdir, killed_at, second = killed_and_resumed
    config = config_lib.load(str(workdir / "config.json"))
    assert config.epochs == 3 and config.features == 32 and config.task_names() == ("pose2d", "segmentation",
                                                                                   "depth", "pose3d")  # fmt: skip
    assert (workdir / "final.weights.h5").exists() and (workdir / "history.csv").exists()
    assert (workdir / "export" / "3" / "saved_model.pb").exists() and (workdir / "export" / "models.config").exists()
    assert list((workdir / "logs").rglob("events.out.tfevents*")), "TensorBoard logs"
    metrics = json.loads((workdir / "metrics.json").read_text())
    # TensorBoard: losses, held-out metrics and prediction images at every epoch of the resumed process (the tiny
    # preset's 3 steps per epoch are no multiple of the batch summaries' update_freq).
    resumed = set(range(killed_at, config.epochs))
    assert resumed <= set(_summaries(workdir / "logs" / "train", "epoch_loss"))
    assert resumed <= set(_summaries(workdir / "logs" / "validation", "epoch_pose3d_mjd_mm"))
    pictures = _summaries(workdir / "logs" / "images", "predictions")
    assert resumed <= set(pictures)
    last = pictures[config.epochs - 1]
    assert len(last) == 2 + 3, "width, height, a PNG per held-out frame (the clip's 3, at most 4)"
    assert (int(last[0]), int(last[1])) == (3 * config.input_size, config.input_size), "input + skeleton, parts, depth"
    assert set(metrics["trained"]) >= {"pose2d", "segmentation", "depth", "pose3d", "num_frames"}
    assert metrics["trained"]["num_frames"] == metrics["untrained"]["num_frames"] == 2, "held-out frames 0 and 4"
    assert metrics["trained"]["frame_stride"] == metrics["untrained"]["frame_stride"] == 4
    assert set(metrics["headline"]["trained"]) == set(metrics["headline"]["untrained"])
    assert "held-out   trained" in second.stdout and "val_pose2d_pckh" in (workdir / "history.csv").read_text()
    with open(workdir / "history.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2"], "each epoch once, across the kill"
    # A run's output is its own: not TensorFlow's saver INFO logs (per checkpoint lines inside the progress bar, per
    # export signature a line listing hundreds of weight ids) nor Keras' warning about fit's shuffle argument.
    for noise in ("Sharding callback duration", "contains input name(s)", "Writing fingerprint", "shuffle=True"):
        assert noise not in second.stdout + second.stderr


def _summaries(log_dir, tag):
    """{step: value} of a TensorBoard tag in the event files of `log_dir`."""
    return {event.step: tf.make_ndarray(value.tensor) for path in log_dir.iterdir()
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value
            if value.tag == tag}  # fmt: skip


def test_tensorboard_numbers_a_resumed_runs_batches_after_the_restored_step_and_writes_every_epoch(tmp_path):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(6)  # two epochs of 3 steps restored from a checkpoint
    board = TensorBoard(str(tmp_path), update_freq=1)
    board.set_model(model)
    board.on_train_begin()
    for batch in range(2):
        board.on_train_batch_begin(batch)
        board.on_train_batch_end(batch, {"loss": 1.0})
    board.on_epoch_end(2, {"loss": 1.0, "val_pose2d_pckh": 50.0})
    board.on_train_end()
    assert sorted(_summaries(tmp_path / "train", "batch_loss")) == [7, 8]
    assert list(_summaries(tmp_path / "validation", "epoch_pose2d_pckh")) == [2]


def test_an_epoch_stopped_by_a_nan_loss_is_neither_saved_nor_evaluated(tmp_path, monkeypatch):
    """Keras ends an epoch that TerminateOnNaN stopped like any other: its checkpoint of non-finite weights became the
    one a rerun resumed from (diverging again at once), and it was evaluated (minutes on SURREAL's val split)."""
    model = trainer.compile_model(config_lib.make_config("tiny", tasks="pose2d"))
    checkpoint = EpochCheckpoint(str(tmp_path), model)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 0.5, "pose2d_loss": 0.5})
    checkpoint.on_epoch_end(1, {"loss": float("nan"), "pose2d_loss": float("inf")})
    assert checkpoint.manager.latest_checkpoint.endswith("ckpt-1") and checkpoint.restore() == 1
    monkeypatch.setattr(evaluation, "evaluate", lambda *args: pytest.fail("a diverged model was evaluated"))
    held_out = EvaluationCallback("unused-*.tfrecord", "pose2d", 2, 64, forward=lambda images: images)
    held_out.on_epoch_end(1, {"loss": float("nan")})
    assert held_out.last_results is None


def test_the_initial_network_is_the_one_training_starts_from():
    """A run resumed with another --eval_frame_stride evaluates its untrained network again: rebuilt from the seed,
    whatever was drawn in between."""
    config = config_lib.make_config("tiny", tasks="pose2d")
    trained = trainer.compile_model(config)
    keras.random.normal((3,))
    again = trainer.initial_network(config)
    assert all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), again.get_weights(), strict=True))
    other = trainer.initial_network(dataclasses.replace(config, seed=config.seed + 1))
    assert not all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), other.get_weights(), strict=True))


def test_the_history_keeps_the_epochs_a_run_resumes_from(tmp_path):
    """An epoch logged but not checkpointed (stopped by a non-finite loss, or killed between the two) is trained again:
    its first row goes, so that history.csv holds each epoch once."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_pose2d_pckh\n0,2.5,10.0\n1,2.0,12.0\n2,nan,0.0\n")
    logger = history_logger(str(path), initial_epoch=2)
    logger.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    logger.on_train_begin()
    logger.on_epoch_end(2, {"loss": 1.5, "val_pose2d_pckh": 14.0})
    logger.on_train_end()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["epoch"], row["loss"]) for row in rows] == [("0", "2.5"), ("1", "2.0"), ("2", "1.5")]
    history_logger(str(path), initial_epoch=3)
    assert path.read_text().count("\n") == 4, "nothing to drop: unchanged"


def test_a_nan_loss_stops_training_with_a_clear_message():
    guard = TerminateOnNaN()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False
    guard.set_model(model)
    guard.on_train_batch_end(3, {"loss": 1.0, "pose2d_loss": 0.5})
    assert guard.message is None and not model.stop_training
    guard.on_train_batch_end(4, {"loss": float("nan"), "pose2d_loss": float("inf"), "depth_loss": 0.1})
    assert model.stop_training
    assert "batch 4" in guard.message and "loss, pose2d_loss" in guard.message and "--learning_rate" in guard.message


def test_fit_traces_the_train_step_once():
    """Every run pays the train step's trace (seconds to tens of seconds); a second one doubles every start."""
    config = config_lib.make_config("tiny", tasks="pose2d,segmentation")
    model = trainer.compile_model(config)
    inputs, targets = random_batch(config.task_names(), config.input_size, batch=config.batch_size)
    dataset = tf.data.Dataset.from_tensors((inputs, targets)).repeat()
    dataset = dataset.map(losses.targets_per_output(config.task_names(), config.num_stacks))
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    trainer.build_before_fit(model, tf.distribute.get_strategy(), dataset)
    history = model.fit(dataset, epochs=2, steps_per_epoch=2, verbose=0, shuffle=False)
    assert len(traces) == 1
    assert np.isfinite(history.history["loss"]).all()


def test_bad_flags_and_config_files_are_errors_naming_them(tmp_path):
    """Bad values fail before anything is built or written, as 'error: <field>: expected ...' with exit status 1,
    from the flags and from a work dir's config.json alike."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    bad_flags = subprocess.run(_train_command(tmp_path / "run", "--batch_size=0", "--tasks=pose2d,normals"),
                               env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad_flags.returncode == 1
    assert bad_flags.stderr.startswith("error: tasks: expected a non-empty comma-separated subset of pose2d,")
    assert "batch_size: expected a positive integer, got 0" in bad_flags.stderr
    assert not (tmp_path / "run").exists()
    config_path = tmp_path / "config.json"
    for text, expected in [('{"tasks": "pose2d", "batch_size": -5}', "batch_size: expected a positive integer"),
                           ('{"tasks": "pose2d", "batchsize": 5}', r"unknown fields \['batchsize'\]"),
                           ('{"tasks": "pose2d",', "not JSON"),
                           ('["pose2d"]', "expected a JSON object of Config fields, got list")]:  # fmt: skip
        config_path.write_text(text)
        with pytest.raises(config_lib.ConfigError, match=f"^{config_path}: {expected}"):
            config_lib.load(str(config_path))
    evaluated = subprocess.run([sys.executable, "-m", "mtha_tf.evaluate", f"--workdir={tmp_path}"], env=env,
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    assert evaluated.returncode == 1 and f"error: {config_path}: expected a JSON object" in evaluated.stderr


def test_evaluate_writes_tables_plots_and_matches_the_training_metrics(killed_and_resumed):
    # The command, not the function: its process runs oneDNN with frozen weights (cpu_runtime), the training
    # process that computed metrics.json did not.
    workdir, _, _ = killed_and_resumed
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The frames evaluated in training (every 4th), one per forward pass instead of the run's batch of 4.
    command = [sys.executable, "-m", "mtha_tf.evaluate", f"--workdir={workdir}", "--frame_stride=4", "--batch_size=1"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = workdir / "evaluation_every4"  # every 4th frame: beside the every-frame tables of evaluation/
    assert f"per-part tables, plots and results.json in {out}/" in done.stderr
    results = json.loads((out / "results.json").read_text())
    trained = json.loads((workdir / "metrics.json").read_text())["trained"]
    for task, key in (
        ("pose2d", "pckh"),
        ("segmentation", "mean_iou_parts"),
        ("depth", "rmse_mm"),
        ("pose3d", "mjd_mm"),
    ):
        assert results[task][key] == pytest.approx(trained[task][key], rel=1e-4, abs=1e-6)
    for name in ("pose2d.md", "segmentation.csv", "depth.md", "pose3d.csv", "success_rates.png", "predictions.png"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "segmentation.md").read_text().splitlines()
    assert table[0].startswith("| segmentation IoU") and len(table) == 2 + 15 + 2  # header, rule, 15 classes, 2 means


def test_evaluating_on_the_test_split_or_fewer_frames_keeps_the_validation_tables(killed_and_resumed, tmp_path):
    workdir, _, _ = killed_and_resumed
    no_test = r"records/test-\*\.tfrecord'?: the run's embedded data, which has no test split; for SURREAL's, "
    with pytest.raises(FileNotFoundError, match=no_test + "converted by data_prep.surreal, name them with --data_dir"):
        evaluate.evaluate_workdir(str(workdir), split="test")
    for shard in (workdir / "data" / "records").glob("val-*.tfrecord"):  # SURREAL's layout: <split>-*.tfrecord
        shutil.copy(shard, tmp_path / shard.name.replace("val-", "test-", 1))
    on_validation, _ = evaluate.evaluate_workdir(str(workdir))
    validation = workdir / "evaluation" / "results.json"
    before = validation.read_bytes()
    on_test, _ = evaluate.evaluate_workdir(str(workdir), data_dir=str(tmp_path), split="test")
    evaluate.evaluate_workdir(str(workdir), frame_stride=4)
    assert validation.read_bytes() == before
    assert json.loads((workdir / "evaluation_every4" / "results.json").read_text())["num_frames"] == 2
    written = json.loads((workdir / "evaluation_test" / "results.json").read_text())
    assert written["pose3d"]["mjd_mm"] == pytest.approx(on_validation["pose3d"]["mjd_mm"], rel=1e-4)
    # Every frame of the held-out clip (0, 2, 4), whatever the run's --eval_frame_stride.
    assert written["num_frames"] == on_test["num_frames"] == on_validation["num_frames"] == 3


def test_a_data_dir_without_shards_fails_before_the_work_dir_is_written(tmp_path):
    config = config_lib.make_config("tiny", data_dir=str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match=r"no TFRecord shards match .*typo/train-\*\.tfrecord"):
        trainer.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists(), "no config.json that would refuse the corrected command"


def test_a_data_dir_converted_without_its_val_split_names_the_split(tmp_path, records_dir):
    (tmp_path / "records").mkdir()
    for shard in records_dir.glob("train-*.tfrecord"):
        shutil.copy(shard, tmp_path / "records")
    config = config_lib.make_config("tiny", data_dir=str(tmp_path / "records"))
    with pytest.raises(FileNotFoundError, match=r"no TFRecord shards match .*/val-\*\.tfrecord'; .*--splits=train,val"):
        trainer.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_work_dir_that_cannot_be_a_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(trainer.TrainingFailed, match=r"--workdir=.*notes\.txt: cannot be made a folder \(File exists"):
        trainer.train(config_lib.make_config("tiny"), str(tmp_path / "notes.txt"))
    # A bucket: os.makedirs("gs://b/run") made ./gs:/b/run, and the whole run went there.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(trainer.TrainingFailed, match=r"--workdir=gs://bucket/run: cannot be made a folder \(a URL;"):
        trainer.train(config_lib.make_config("tiny"), "gs://bucket/run")
    assert not (tmp_path / "gs:").exists()


def test_a_work_dir_being_trained_is_refused_to_a_second_process(tmp_path):
    """A job launched twice (or requeued while its first run lives) would write its checkpoints, logs and weights
    between the first one's; the second stops before writing anything, naming the first. The kernel drops the hold when
    the holder ends, however it ends, so a killed run's work dir is free for its resumption."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mtha_tf.trainer import held_alone\n"
        f"with held_alone({str(workdir)!r}):\n    print('held', flush=True); time.sleep(60)"
    )], cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(trainer.TrainingFailed, match=rf"{workdir} is being trained by process {holder.pid} on "):
            trainer.train(config_lib.make_config("tiny"), str(workdir))
        assert sorted(p.name for p in workdir.iterdir()) == [".train.lock"], "nothing written"
    finally:
        holder.kill()
        holder.wait()
    with trainer.held_alone(str(workdir)):  # free again once the holder is gone (killed)
        pass
    # A study waits for a combination another process trains: wait_until_released returns once the holder lets go.
    with held_by_another_process(f"trainer.held_alone({str(workdir)!r})",
                                 f"open({str(tmp_path / 'released')!r}, 'w').close()"):  # fmt: skip
        trainer.wait_until_released(str(workdir))
        assert (tmp_path / "released").exists(), "returned while the work dir was held"


def test_a_work_dir_on_a_file_system_without_locks_trains_unheld(tmp_path, monkeypatch):
    """Some FUSE mounts refuse flock (ENOLCK): training goes on there as before, unheld, rather than failing."""
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    trained = []
    with trainer.held_alone(str(tmp_path)):  # the OSError used to end the run here
        trained.append(True)
    assert trained, "the block under the lock ran"


def test_evaluate_names_a_folder_that_is_not_a_finished_run(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "mtha_tf.evaluate", f"--workdir={tmp_path}"]
    empty = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert empty.returncode == 1
    assert f"error: {tmp_path / 'config.json'}: not found; expected a train.py work dir" in empty.stderr
    config_lib.save(config_lib.make_config("tiny"), str(tmp_path / "config.json"))  # started, never finished
    unfinished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert unfinished.returncode == 1
    assert f"error: {tmp_path / 'final.weights.h5'}: no final weights" in unfinished.stderr
