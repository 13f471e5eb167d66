"""The study: its combinations, and a tiny two-combination run whose numbers equal `evaluate`'s: reused, moved, with
another process beside it, for all four targets, with Table V."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mtha_tf import config as config_lib
from mtha_tf import report, study, tasks, trainer
from mtha_tf.evaluate import evaluate_workdir, load_trained
from tests.conftest import REPO, held_by_another_process


def test_the_paper_combinations():
    paper = study.combinations("depth")
    assert len(set(paper)) == 8 and paper[0] == ("depth",) and all("depth" in c for c in paper)
    assert tasks.TASKS in paper
    assert len({c for target in tasks.TASKS for c in study.combinations(target)}) == 15
    assert len(study.combinations("depth", "all")) == 15
    assert study.combinations("pose2d", "pose2d; depth,pose2d;pose2d,depth") == [("pose2d",), ("pose2d", "depth")]
    with pytest.raises(ValueError, match=r"combinations \['pose2d\+segmentation'\] do not contain .* depth"):
        study.combinations("depth", "depth;segmentation,pose2d")
    with pytest.raises(ValueError, match="subset"):
        study.combinations("depth", "depth;depth,normals")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("study")
    config = config_lib.make_config("tiny", epochs=1, steps_per_epoch=2, export=False)
    results = study.run_study("pose2d", "pose2d;pose2d,segmentation", config, str(study_dir))
    return study_dir, config, results


def test_a_tiny_study_writes_the_comparison_tables_and_plots(tiny_study):
    study_dir, _, results = tiny_study
    assert list(results) == ["pose2d", "pose2d+segmentation"]
    out = study_dir / "pose2d"
    table = (out / "pose2d.md").read_text().splitlines()
    assert table[0] == "| pose2d PCKh@0.5 (%) | pose2d | pose2d+segmentation |"
    assert len(table) == 2 + 16 + 2 and all("*" in row for row in table[2:]), "a row per joint, two means, best marked"
    for name in ("pose2d.csv", "success_rates.png", "improvement.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "results.json").read_text())
    assert summary["best_multi_task"] == "pose2d+segmentation" and set(summary["results"]) == set(results)
    runs = sorted(p.name for p in (study_dir / "runs").iterdir())
    assert runs == ["pose2d", "pose2d+segmentation"]
    held_out = {config_lib.load(str(study_dir / "runs" / r / "config.json")).data_dir for r in runs}
    assert len(held_out) == 1, "every combination uses the same data"
    # The paper's Table V: its pose2d column from this study (Table III's mean), the other targets not studied yet.
    alone, multi = (report.SUMMARY_ROWS["pose2d"][0][1](results[name]["pose2d"]) for name in results)
    table_v = (study_dir / "state_of_the_art.md").read_text()
    assert f"| this study, independent tasks | – | {alone:.2f} | – | – |" in table_v
    assert f"| this study, multi-task | – | {multi:.2f} | – | – |" in table_v
    assert "for T in segmentation, pose3d, depth" in table_v


def test_the_study_numbers_equal_evaluate_and_a_second_run_reuses_the_models(tiny_study, monkeypatch):
    study_dir, config, results = tiny_study
    for name, result in results.items():
        evaluated, _ = evaluate_workdir(str(study_dir / "runs" / name))
        assert evaluated["pose2d"]["pckh_per_joint"] == result["pose2d"]["pckh_per_joint"]
        assert evaluated["pose2d"]["pckh"] == result["pose2d"]["pckh"]

    # The command with the same settings (a weight of 1 is the paper's sum) reuses both runs and their evaluations and
    # says where the tables are.
    evaluated_at = {name: (study_dir / "runs" / name / "evaluation" / "results.json").stat().st_mtime_ns
                    for name in results}  # fmt: skip
    command = [sys.executable, "-m", "mtha_tf.study", "--target_task=pose2d", "--preset=tiny", "--epochs=1",
               "--steps_per_epoch=2", "--noexport", "--combinations=pose2d;pose2d,segmentation",
               "--task_weights=segmentation=1", f"--study_dir={study_dir}"]  # fmt: skip
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Epoch" not in again.stdout, "a finished combination was trained again"
    assert evaluated_at == {name: (study_dir / "runs" / name / "evaluation" / "results.json").stat().st_mtime_ns
                            for name in results}, "a finished evaluation was made again"  # fmt: skip
    shown = dict(line.split(maxsplit=1) for line in again.stdout.splitlines() if line.startswith("pose2d"))
    assert shown == {name: f"pose2d pckh: {r['pose2d']['pckh']:.2f}" for name, r in results.items()}
    assert "best multi-task combination: pose2d+segmentation" in again.stdout
    assert f"tables, plots and results.json in {study_dir / 'pose2d'}/" in again.stdout
    assert f"Table V, with every target studied in {study_dir}: {study_dir / 'state_of_the_art.md'}" in again.stdout

    def no_training(*args, **kwargs):
        raise AssertionError("a finished combination was trained again")

    monkeypatch.setattr(trainer, "train", no_training)
    # XLA and the export change how a run executes, not what it trains: the same study under another --[no]jit_compile
    # or --[no]export goes on.
    executed_otherwise = dataclasses.replace(config, jit_compile=not config.jit_compile, export=not config.export)
    study.run_study("pose2d", "pose2d", executed_otherwise, str(study_dir))
    # Compared on every 4th frame of the held-out clip (frames 0, 2, 4 converted): frames 0 and 4.
    on_fewer = study.run_study("pose2d", "pose2d", config, str(study_dir), frame_stride=4)["pose2d"]
    assert on_fewer["num_frames"] == 2 and on_fewer["frame_stride"] == 4
    with pytest.raises(trainer.TrainingFailed, match=r"another configuration \(steps_per_epoch: 2 -> 3\)"):
        changed = config_lib.make_config("tiny", epochs=1, steps_per_epoch=3, export=False)
        study.run_study("pose2d", "pose2d", changed, str(study_dir))
    # More epochs at the constant learning rate continue the finished combination instead of refusing it.
    trained_on = []
    monkeypatch.setattr(trainer, "train", lambda config, workdir: trained_on.append((os.path.basename(workdir),
                                                                                      config.epochs)))  # fmt: skip
    study.run_study("pose2d", "pose2d", dataclasses.replace(config, epochs=2), str(study_dir))
    assert trained_on == [("pose2d", 2)]


def test_all_targets_in_one_command_each_failure_its_own(tiny_study, tmp_path):
    """--target_task=all studies the four targets in turn (here those of the listed combinations), reusing what the
    others trained and evaluated; a target whose study cannot finish does not stop the next, and the command fails."""
    study_dir, _, results = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(study_dir, copy)
    other = config_lib.load(str(copy / "runs" / "pose2d" / "config.json"))
    (copy / "runs" / "segmentation").mkdir()
    config_lib.save(
        dataclasses.replace(other, tasks="segmentation", steps_per_epoch=3),
        str(copy / "runs" / "segmentation" / "config.json"),
    )
    command = [sys.executable, "-m", "mtha_tf.study", "--target_task=all", "--preset=tiny", "--epochs=1",
               "--steps_per_epoch=2", "--noexport", "--combinations=pose2d;pose2d,segmentation;segmentation",
               f"--study_dir={copy}"]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))  # fmt: skip
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Epoch" not in run.stdout, "the runs of the pose2d study were trained again"
    assert f"tables, plots and results.json in {copy / 'pose2d'}/" in run.stdout
    assert "error: segmentation: " in run.stderr and "another configuration (steps_per_epoch: 3 -> 2)" in run.stderr
    assert "error: the studies of segmentation did not finish (see above)" in run.stderr
    table_v = (copy / "state_of_the_art.md").read_text()
    assert "| pose2d+segmentation |" in table_v and "for T in segmentation, pose3d, depth" in table_v

    (copy / "runs" / "segmentation" / "config.json").unlink()  # the mistake mended: the same command goes on
    command[command.index("--combinations=pose2d;pose2d,segmentation;segmentation")] = (
        "--combinations=pose2d,segmentation"
    )
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Epoch" not in run.stdout and "evaluating" not in run.stderr, "trained or evaluated again"
    assert f"tables, plots and results.json in {copy / 'segmentation'}/" in run.stdout
    assert "for T in pose3d, depth" in (copy / "state_of_the_art.md").read_text()


def test_an_evaluation_is_reused_only_of_the_same_weights_and_frames(tiny_study, tmp_path, monkeypatch):
    """A study evaluates its runs at every command, and the studies of the four targets share runs: an evaluation made
    of the same final weights, shards and frames is read back (results.json and per_frame.npz, for the success-rate
    plot); other weights (a run trained on), another frame stride or reuse=False evaluate again."""
    study_dir, _, _ = tiny_study
    run = tmp_path / "pose2d"
    # Its config.json names the study's shared data; without the evaluations other tests made of it.
    shutil.copytree(study_dir / "runs" / "pose2d", run, ignore=shutil.ignore_patterns("evaluation*"))
    first, first_per_frame = evaluate_workdir(str(run))
    assert first["evaluated"]["frame_stride"] == 1 and len(first["evaluated"]["weights_sha256"]) == 64
    evaluations = []
    real_evaluate = study.evaluate.evaluation.evaluate
    monkeypatch.setattr(study.evaluate.evaluation, "evaluate", lambda *a: evaluations.append(a) or real_evaluate(*a))
    again, again_per_frame = evaluate_workdir(str(run), reuse=True)
    assert evaluations == [] and again == first
    assert again_per_frame.keys() == first_per_frame.keys() == {"pose2d", "pose2d_per_part"}
    np.testing.assert_array_equal(again_per_frame["pose2d"], first_per_frame["pose2d"])
    assert again_per_frame["pose2d_per_part"].shape == (first["num_frames"], 16)
    np.testing.assert_allclose(np.nanmean(again_per_frame["pose2d_per_part"], axis=1), again_per_frame["pose2d"],
                               rtol=1e-6)  # fmt: skip
    assert evaluate_workdir(str(run), reuse=True, frame_stride=4)[0]["num_frames"] == 2 and len(evaluations) == 1
    evaluate_workdir(str(run), reuse=False, frame_stride=4)
    assert len(evaluations) == 2
    _, model = load_trained(str(run))  # trained on: other final weights
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 2.0)
    model.save_weights(str(run / "final.weights.h5"))
    assert evaluate_workdir(str(run), reuse=True, frame_stride=4)[0]["evaluated"] != again["evaluated"]
    assert len(evaluations) == 3
    per_frame = run / "evaluation_every4" / "per_frame.npz"
    per_frame.write_bytes(per_frame.read_bytes()[:100])  # damaged: evaluated again, not an error
    evaluate_workdir(str(run), reuse=True, frame_stride=4)
    assert len(evaluations) == 4
    # One made by code whose evaluations hold less (before the per-part errors of Fig. 3) is made again.
    monkeypatch.setattr(study.evaluate.evaluation, "FORMAT", study.evaluate.evaluation.FORMAT + 1)
    evaluate_workdir(str(run), reuse=True, frame_stride=4)
    assert len(evaluations) == 5


def test_an_evaluation_another_process_is_making_is_waited_for_and_reused(tiny_study, tmp_path, monkeypatch, capsys):
    """The four targets' studies run at once in one study dir share combinations, and each evaluated a shared one
    itself: hours each on SURREAL's test split. The later one now waits for the evaluation and reuses it."""
    study_dir, _, _ = tiny_study
    run = tmp_path / "pose2d"
    shutil.copytree(study_dir / "runs" / "pose2d", run, ignore=shutil.ignore_patterns("evaluation*"))
    made, _ = evaluate_workdir(str(run))
    shutil.move(run / "evaluation", tmp_path / "made")  # the other process puts it back while it holds the run
    lock, then = (
        f"file_locks.flocked({str(run / '.evaluation.lock')!r})",
        f"shutil.move({str(tmp_path / 'made')!r}, {str(run / 'evaluation')!r})",
    )
    monkeypatch.setattr(study.evaluate.evaluation, "evaluate", lambda *args: pytest.fail("evaluated again"))
    with held_by_another_process(lock, then):
        again, _ = evaluate_workdir(str(run), reuse=True)
    assert again == made
    assert f"note: another process is evaluating {run} into {run / 'evaluation'}; waiting" in capsys.readouterr().err


def test_the_evaluations_of_runs_where_no_lock_can_be_made_are_reused(tiny_study, tmp_path, monkeypatch):
    """Runs shared read-only (a group's trained runs linked into a study dir): their finished evaluations are reused
    without the evaluation lock, which cannot be made there (stood in for by a folder where the lock file goes)."""
    study_dir, _, _ = tiny_study
    run = tmp_path / "pose2d"
    shutil.copytree(study_dir / "runs" / "pose2d", run, ignore=shutil.ignore_patterns("evaluation*", ".evaluation*"))
    made, _ = evaluate_workdir(str(run))
    (run / ".evaluation.lock").unlink()
    (run / ".evaluation.lock").mkdir()
    monkeypatch.setattr(study.evaluate.evaluation, "evaluate", lambda *args: pytest.fail("evaluated again"))
    assert evaluate_workdir(str(run), reuse=True)[0] == made


def test_a_moved_study_dir_reuses_its_runs_and_their_evaluations(tiny_study, tmp_path, monkeypatch):
    """A study dir moved, or copied from the cluster that trained it: its runs name the embedded data by the old path,
    and were refused as "another configuration" (and evaluated again) though the shards were theirs. Now the same
    shards elsewhere are the runs' data: nothing is trained or evaluated again, and the runs record the new path."""
    study_dir, config, results = tiny_study
    moved = tmp_path / "moved"
    shutil.copytree(study_dir, moved)
    monkeypatch.setattr(trainer, "train", lambda *args: pytest.fail("a finished combination was trained again"))
    monkeypatch.setattr(study.evaluate.evaluation, "evaluate", lambda *args: pytest.fail("evaluated again"))
    again = study.run_study("pose2d", "pose2d;pose2d,segmentation", config, str(moved))
    assert {n: r["pose2d"]["pckh_per_joint"] for n, r in again.items()} == {
        n: r["pose2d"]["pckh_per_joint"] for n, r in results.items()
    }
    for name in results:
        assert config_lib.load(str(moved / "runs" / name / "config.json")).data_dir == str(moved / "data" / "records")
    assert json.loads((moved / "pose2d" / "results.json").read_text())["held_out"].startswith(str(moved))
    run = moved / "runs" / "pose2d"
    gone = config_lib.load(str(run / "config.json"))
    config_lib.save(dataclasses.replace(gone, data_dir=str(tmp_path / "gone")), str(run / "config.json"))
    with pytest.raises(FileNotFoundError, match="records; if its shards are elsewhere now, name them with --data_dir"):
        evaluate_workdir(str(run))


def test_all_trains_every_combination_and_tables_those_with_the_target(tiny_study, tmp_path, monkeypatch):
    """--combinations=all trains the 15 (a study of another target in the same study dir then reuses them), each with
    the --task_weights of its tasks; the target's table compares the 8 that contain it."""
    study_dir, config, _ = tiny_study
    weights = {}

    def record_weights(config, workdir):
        weights[os.path.basename(workdir)] = config.task_weights

    monkeypatch.setattr(study, "train_combination", record_weights)
    finished = evaluate_workdir(str(study_dir / "runs" / "pose2d"))  # stands in for every combination's numbers
    monkeypatch.setattr(study.evaluate, "evaluate_workdir", lambda *args, **kwargs: finished)
    shared_data = config_lib.load(str(study_dir / "runs" / "pose2d" / "config.json")).data_dir
    weighted = dataclasses.replace(config, data_dir=shared_data, task_weights={"pose2d": 2, "depth": 0.5})
    results = study.run_study("pose2d", "all", weighted, str(tmp_path))
    assert sorted(weights) == sorted(study.run_name(c) for c in study.combinations("pose2d", "all"))
    assert len(weights) == 15
    assert weights["pose2d+depth"] == {"pose2d": 2.0, "depth": 0.5} and weights["depth+pose3d"] == {"depth": 0.5}
    assert weights["segmentation"] == {}
    assert sorted(results) == sorted(study.run_name(c) for c in study.combinations("pose2d", "paper"))
    header = (tmp_path / "pose2d" / "pose2d.md").read_text().splitlines()[0]
    assert header.count("|") == 2 + 8 and "| segmentation+depth |" not in header


def test_a_split_without_shards_fails_before_any_training(tiny_study, tmp_path, monkeypatch):
    study_dir, config, _ = tiny_study
    monkeypatch.setattr(study, "train_combination", lambda config, workdir: pytest.fail("trained before the check"))
    shared_data = config_lib.load(str(study_dir / "runs" / "pose2d" / "config.json")).data_dir
    with pytest.raises(FileNotFoundError, match=r"test-\*\.tfrecord'$"):  # the embedded data has no test clips
        study.run_study("pose2d", "pose2d", dataclasses.replace(config, data_dir=shared_data), str(tmp_path), "test")
    with pytest.raises(FileNotFoundError, match=r"tfrecord': the study's embedded data has no test split; for SURREAL"):
        study.run_study("pose2d", "pose2d", config, str(tmp_path / "embedded"), "test")
