"""The training configuration: presets, overrides, the checks on every field, and what the flags record."""

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from mtha_tf import config as config_lib
from mtha_tf import config_flags, trainer, training_data
from mtha_tf.data.shards import converted_frames
from tests.conftest import REPO


def test_presets_and_overrides():
    config = config_lib.make_config("paper", tasks="depth,pose2d", epochs=None)
    assert config.task_names() == ("pose2d", "depth") and config.epochs == 30 and config.batch_size == 5
    # The same network however its tasks are spelled: a work dir of one resumes with the other.
    assert config.tasks == "pose2d,depth"
    assert not config_lib.training_differences(config, config_lib.make_config("paper", tasks=" pose2d ,depth,depth"))
    assert config_lib.PRESETS["paper"].learning_rate == 1e-3 and config_lib.PRESETS["paper"].num_stacks == 2
    with pytest.raises(ValueError, match="subset"):
        config_lib.make_config("tiny", tasks="pose2d,normals")
    with pytest.raises(ValueError, match="preset"):
        config_lib.make_config("huge")
    assert np.isfinite(config_lib.PRESETS["small"].learning_rate)
    assert (
        config_lib.PRESETS["paper"].lr_schedule == "constant"
        and config_lib.PRESETS["paper"].depth_background_weight == 1
    )
    with pytest.raises(ValueError, match="lr_schedule"):
        config_lib.make_config("tiny", lr_schedule="linear")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 0}, "batch_size: expected a positive integer, got 0"),
        ({"steps_per_epoch": 0}, "steps_per_epoch: expected a positive integer"),  # an endless first epoch
        ({"learning_rate": -1e-3}, "learning_rate: expected a positive number"),  # gradient ascent, silently
        ({"input_size": 100}, r"input_size: expected a multiple of 64 \(4 x 2\^hourglass_depth\), got 100"),
        ({"features": 1}, "features: expected an integer >= 2"),
        ({"depth_background_weight": float("nan")}, "depth_background_weight: expected a positive number"),
        ({"task_weights": {"normals": 1}}, "task_weights: expected a dict from tasks"),
        ({"epochs": 0, "num_stacks": 0}, "num_stacks: expected a positive integer, got 0; epochs: expected"),
    ],
)
def test_a_configuration_training_cannot_use_is_refused_naming_the_field(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.make_config("paper", **overrides)


def test_the_held_out_frame_stride_is_a_flag_that_does_not_make_another_run(tmp_path):
    """--eval_frame_stride picks the frames evaluated during training (paper: every 10th of a clip; the small presets'
    short clips: all); it changes no weight, so a run resumes under another value, and a config.json written before
    it existed (with eval_max_batches, unused) loads as the every-frame evaluation it was."""
    flag_values = flags.FlagValues()
    config_flags.define_config_flags(flag_values=flag_values)
    flag_values(["train.py", "--eval_frame_stride=5"])
    config = config_flags.config_from_flags(flag_values)
    assert config.eval_frame_stride == 5 and config_lib.PRESETS["paper"].eval_frame_stride == 10
    assert config_lib.PRESETS["small"].eval_frame_stride == config_lib.PRESETS["tiny"].eval_frame_stride == 1
    assert not config_lib.training_differences(config_lib.PRESETS["paper"], config)
    flag_values(["train.py", "--eval_batch_size=64"])  # nor does the evaluation's batch
    assert not config_lib.training_differences(config, config_flags.config_from_flags(flag_values))
    with pytest.raises(config_lib.ConfigError, match="eval_frame_stride: expected a positive integer, got 0"):
        config_lib.make_config("paper", eval_frame_stride=0)
    earlier = dict(dataclasses.asdict(config_lib.PRESETS["paper"]), eval_max_batches=None)
    del earlier["eval_frame_stride"]
    (tmp_path / "config.json").write_text(json.dumps(earlier))
    assert config_lib.load(str(tmp_path / "config.json")) == config_lib.make_config("paper", eval_frame_stride=1)


def test_task_weights_are_a_flag_recorded_once_per_loss(caplog):
    """--task_weights=pose2d=10,depth=0.5 weights the tasks' losses (their sizes differ ~10x); a weight of 1 is the
    paper's sum and a task the run does not train has no loss, so neither makes another run (the study gives one
    --task_weights to every combination), and train.py says when a named task is not trained."""
    flag_values = flags.FlagValues()
    config_flags.define_config_flags(flag_values=flag_values)

    def parsed(*argv):
        flag_values.unparse_flags()
        flag_values(["train.py", *argv])
        return config_flags.config_from_flags(flag_values)

    weighted = parsed("--task_weights=pose2d=10, depth=0.5,segmentation=1")
    assert weighted.task_weights == {"pose2d": 10.0, "depth": 0.5}
    assert config_lib.training_differences(config_lib.PRESETS["paper"], weighted) == [
        "task_weights: {} -> {'pose2d': 10.0, 'depth': 0.5}"
    ]
    caplog.clear()
    plain = parsed("--tasks=pose2d", "--task_weights=pose2d=1,pose3d=3")
    assert plain.task_weights == {} and plain == parsed("--tasks=pose2d")
    assert "--task_weights names pose3d, which this run does not train (--tasks=pose2d): unused" in caplog.text
    assert dataclasses.replace(weighted, tasks="depth").task_weights == {"depth": 0.5}  # a study's combination
    for argv, message in (
        (["--task_weights=pose2d:10"], "--task_weights: expected distinct task=weight pairs like 'pose2d=10,depth"),
        (["--task_weights=depth=1,depth=2"], "--task_weights: expected distinct task=weight pairs"),
        (["--task_weights=normals=2"], "task_weights: expected a dict from tasks"),
        (["--task_weights=depth=-1"], "task_weights: expected a dict from tasks .* to numbers >= 0"),
        (["--tasks=depth", "--task_weights=depth=0"], "every trained task \\(depth\\) has weight 0"),
    ):
        with pytest.raises(config_lib.ConfigError, match=message):
            parsed(*argv)


def test_a_local_data_dir_is_recorded_absolute():
    """config.json then names the same shards from any folder (evaluate, export, resume); URLs stay as given."""
    flag_values = flags.FlagValues()
    config_flags.define_config_flags(flag_values=flag_values)
    for data_dir, recorded in (
        ("records/", os.path.abspath("records")),
        ("gs://bucket/records", "gs://bucket/records"),
    ):
        flag_values.unparse_flags()
        flag_values(["train.py", "--preset=tiny", f"--data_dir={data_dir}"])
        assert config_flags.config_from_flags(flag_values).data_dir == recorded


def test_a_run_knows_its_shards_at_another_path(records_dir, tmp_path):
    """A run's config.json names its --data_dir; the same shards (names and sizes, recorded in shards.json) at another
    path are the same run's data, so a run whose data moved, was copied or is mounted elsewhere resumes, and a study
    dir copied from a cluster reuses its runs. Other shards there are another run's; a run recorded before
    shards.json is compared with the shards still at its recorded path."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = config_lib.make_config("tiny", data_dir=str(records_dir))
    config_lib.save(config, str(workdir / "config.json"))
    assert training_data.record_shards(config, str(workdir)) == ""
    assert set(json.loads((workdir / "shards.json").read_text())) == {"train", "val"}
    assert training_data.record_shards(config, str(workdir)) == "", "the same shards again"

    def differing(data_dir):
        elsewhere = dataclasses.replace(config, data_dir=str(data_dir))
        same_data = functools.partial(training_data.same_shards, str(workdir), str(data_dir))
        return config_lib.differing_run(str(workdir / "config.json"), elsewhere, same_data)

    moved = tmp_path / "moved"
    shutil.copytree(records_dir, moved)
    assert differing(moved) == ""
    assert "data_dir: " in config_lib.differing_run(str(workdir / "config.json"), dataclasses.replace(
        config, data_dir=str(moved))), "by path alone the run is another"  # fmt: skip
    other = tmp_path / "other"
    shutil.copytree(records_dir, other)
    with open(other / "val-00000-of-00001.tfrecord", "ab") as shard:
        shard.write(b"\0")  # another conversion: a shard of another size
    assert f"(data_dir: {str(records_dir)!r} -> {str(other)!r})" in differing(other)
    # The same path converted again: the run goes on (same config), saying its finished epochs were on other shards.
    run_on_other, on_other = tmp_path / "run_on_other", dataclasses.replace(config, data_dir=str(other))
    run_on_other.mkdir()
    assert training_data.record_shards(on_other, str(run_on_other)) == ""
    with open(other / "val-00000-of-00001.tfrecord", "ab") as shard:
        shard.write(b"\0")
    note = training_data.record_shards(on_other, str(run_on_other))
    assert note.startswith(f"note: {other} holds other shards than this run recorded in ") and "again?" in note
    (moved / "train-00001-of-00002.tfrecord").unlink()  # part of a set
    assert "data_dir: " in differing(moved)
    (workdir / "shards.json").unlink()  # a run from before the record
    assert differing(other) != "" and differing(records_dir) == ""
    shutil.copytree(records_dir, tmp_path / "copy")
    assert differing(tmp_path / "copy") == "", "compared with the shards at the recorded path"
    gone = dataclasses.replace(config, data_dir=str(tmp_path / "gone"))
    config_lib.save(gone, str(workdir / "config.json"))
    assert "data_dir: " in differing(tmp_path / "copy"), "nothing to compare with"


def test_xla_is_keras_auto_unless_a_flag_sets_it():
    """Unset, --jit_compile is Keras' "auto": XLA on one GPU (pose2d trains 1.6x faster on an H100), never on a CPU,
    where it is slower; --jit_compile and --nojit_compile force it either way."""
    flag_values = flags.FlagValues()
    config_flags.define_config_flags(flag_values=flag_values)
    by_flag = {}
    for argv in ([], ["--jit_compile"], ["--nojit_compile"]):
        flag_values.unparse_flags()
        flag_values(["train.py", "--preset=tiny", *argv])
        by_flag[tuple(argv)] = config_flags.config_from_flags(flag_values).jit_compile
    assert by_flag == {(): None, ("--jit_compile",): True, ("--nojit_compile",): False}
    one_gpu = len(tf.config.list_physical_devices("GPU")) == 1
    for jit_compile, expected in ((None, one_gpu), (True, True), (False, False)):
        model = trainer.compile_model(config_lib.make_config("tiny", tasks="pose2d", jit_compile=jit_compile))
        assert model.jit_compile is expected


@pytest.mark.parametrize("command", [["train.py"], ["-m", "mtha_tf.study"]])
def test_help_lists_the_configuration_flags(command):
    shown = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, capture_output=True, text=True).stdout
    for flag in ("--preset: <paper|small|tiny>", "--data_dir:", "--epochs:", "--lr_schedule: constant", "--seed:"):
        assert flag in shown, shown


def test_a_run_on_shards_of_whole_clips_reading_a_fraction_of_them_says_so(records_dir, tmp_path):
    """Shards converted before data_prep.surreal interleaved a shard's clips hold each clip's frames in a row: a paper
    run on SURREAL converted so at every frame reads ~5 % of its clips. The run says so and how to spread it over every
    clip; interleaved shards and shards without data_prep's manifest get no note."""
    assert converted_frames(str(records_dir), "train") == (18, 1)
    few = config_lib.make_config("tiny", data_dir=str(records_dir), epochs=1, steps_per_epoch=1)  # 4 crops
    assert training_data.clip_coverage_note(few) == "", "interleaved: a share of every shard, from every clip"
    older = tmp_path / "older"
    shutil.copytree(records_dir, older)
    for part in (older / "parts").glob("train-*.json"):
        part.write_text(json.dumps({k: v for k, v in json.loads(part.read_text()).items() if k != "interleaved"}))
    few = dataclasses.replace(few, data_dir=str(older))
    assert training_data.clip_coverage_note(few) == (
        f"note: this run trains on 4 crops and {older} holds 18 training frames, each clip's in a row (converted "
        "before data_prep.surreal interleaved a shard's clips): it reads 22% of the frames and about that share of "
        "the clips. Converting again, or with --frame_stride=5, spreads it over every clip (BUILD.md, Converting "
        "SURREAL at scale)"
    )
    assert training_data.clip_coverage_note(dataclasses.replace(few, epochs=3)) == "", "12 crops: over half the frames"
    assert (
        training_data.clip_coverage_note(config_lib.make_config("tiny", epochs=1, steps_per_epoch=1)) == ""
    )  # embedded
    (older / "manifest.json").unlink()
    assert converted_frames(str(older), "train") is None and training_data.clip_coverage_note(few) == ""
