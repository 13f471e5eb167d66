"""How a study runs its combinations: absolute data paths, waiting for another process, a failed combination, what
it refuses before training (a URL, a cluster)."""

import dataclasses
import os
import re

import pytest

from mtha_tf import config as config_lib
from mtha_tf import study, trainer


def test_a_relative_study_dir_records_its_data_absolute(tmp_path, monkeypatch):
    """The runs' config.json name the study's embedded data by an absolute path, so that `python -m mtha_tf.evaluate
    --workdir=study/runs/...` finds it from any folder; a run recorded with the relative path still counts as the
    same run. The study's --eval_batch_size is its evaluations' batch."""
    monkeypatch.chdir(tmp_path)
    trained, batches = {}, []
    monkeypatch.setattr(study, "train_combination", lambda config, workdir: trained.update({workdir: config}))

    def evaluated(workdir, data_dir, split, frame_stride, reuse, batch_size, progress):
        batches.append(batch_size)
        return {}, {"pose2d": [], "pose2d_per_part": []}  # results, per-frame errors: for the stubs below

    monkeypatch.setattr(study.evaluate, "evaluate_workdir", evaluated)
    monkeypatch.setattr(study.report, "write_tables", lambda results, out_dir, tasks: os.makedirs(out_dir))
    monkeypatch.setattr(study.report, "plot_success_rates", lambda *args: None)
    monkeypatch.setattr(study.state_of_the_art, "write_table", lambda *args: None)
    study.run_study("pose2d", "pose2d", config_lib.make_config("tiny", eval_batch_size=2), "study")
    assert batches == [2]
    [(workdir, config)] = trained.items()
    assert config.data_dir == str(tmp_path / "study" / "data" / "records") and workdir == "study/runs/pose2d"
    recorded_relative = dataclasses.replace(config, data_dir="study/data/records")
    assert config_lib.training_differences(recorded_relative, config) == []


def test_a_combination_another_process_trains_is_waited_for_after_the_others(tmp_path, monkeypatch, capsys):
    """The four targets' studies started at once in one study dir (one per GPU) share combinations: one that another
    process is training stopped the whole study. It now trains the others first, then waits for that process and
    tabulates the run it finished (or resumes it, if that process died)."""
    calls, held_once = [], {"pose2d", "pose2d+segmentation"}

    def train_combination(config, workdir):
        name = os.path.basename(workdir)
        calls.append(("train", name))
        if name in held_once:
            held_once.discard(name)
            raise trainer.WorkDirHeld(workdir, "process 4242 on host")

    monkeypatch.setattr(study, "train_combination", train_combination)
    monkeypatch.setattr(trainer, "wait_until_released", lambda folder: calls.append(("wait", os.path.basename(folder))))
    evaluated = []

    def evaluate_workdir(workdir, data_dir, split, frame_stride, reuse, batch_size, progress):
        evaluated.append(os.path.basename(workdir))
        return {"pose2d": {"pckh": 50.0, "pckh_per_joint": {"head_top": 50.0}}}, {"pose2d": [], "pose2d_per_part": []}

    monkeypatch.setattr(study.evaluate, "evaluate_workdir", evaluate_workdir)
    monkeypatch.setattr(study.report, "write_tables", lambda results, out_dir, tasks: os.makedirs(out_dir))
    monkeypatch.setattr(study.study_figures, "write_figures", lambda *args: None)
    monkeypatch.setattr(study.state_of_the_art, "write_table", lambda *args: None)
    study.run_study("pose2d", "pose2d;pose2d,segmentation;pose2d,depth", config_lib.make_config("tiny"), str(tmp_path))
    assert calls == [("train", "pose2d"), ("train", "pose2d+segmentation"), ("train", "pose2d+depth"),
                     ("wait", "pose2d"), ("train", "pose2d"), ("wait", "pose2d+segmentation"),
                     ("train", "pose2d+segmentation")]  # fmt: skip
    assert evaluated == ["pose2d", "pose2d+segmentation", "pose2d+depth"], "the columns in the combinations' order"
    assert (f"note: {tmp_path}/runs/pose2d is being trained by process 4242 on host; the study trains its other "
            "combinations first, then waits for it") in capsys.readouterr().err  # fmt: skip


def test_a_failed_combination_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    """A combination that diverges (a non-finite loss) stopped the study, and the GPU idled until someone noticed; the
    study now trains the others and then fails naming it. A run dir of another configuration still stops the study
    before anything trains (it would mix two configurations in one study dir)."""
    trained = []

    def train_combination(config, workdir):
        trained.append(os.path.basename(workdir))
        if trained[-1] == "pose2d+segmentation":
            raise trainer.TrainingFailed("training stopped at batch 3: non-finite loss in loss")

    monkeypatch.setattr(study, "train_combination", train_combination)
    monkeypatch.setattr(study.evaluate, "evaluate_workdir", lambda *args, **kwargs: pytest.fail("tabulated"))
    config = config_lib.make_config("tiny")
    which = "pose2d;pose2d,segmentation;pose2d,depth"
    with pytest.raises(trainer.TrainingFailed, match=r"^1 of 3 combinations failed \(pose2d\+segmentation: see above"):
        study.run_study("pose2d", which, config, str(tmp_path))
    assert trained == ["pose2d", "pose2d+segmentation", "pose2d+depth"]
    assert ("error: pose2d+segmentation: training stopped at batch 3: non-finite loss in loss; the study goes on with "
            "its other combinations") in capsys.readouterr().err  # fmt: skip
    trained.clear()
    other = tmp_path / "runs" / "pose2d+depth"
    other.mkdir(parents=True)
    data_dir = str(tmp_path / "data" / "records")
    config_lib.save(config_lib.make_config("tiny", tasks="pose2d,depth", data_dir=data_dir, seed=1),
                    str(other / "config.json"))  # fmt: skip
    with pytest.raises(trainer.TrainingFailed, match=r"depth/config.json describes another configuration \(seed"):
        study.run_study("pose2d", which, config, str(tmp_path))
    assert trained == [], "checked before any combination trained"


def test_a_study_dir_at_a_url_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """os.makedirs("gs://bucket/study") made ./gs:/bucket/study, and the study's data and runs went there."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(trainer.TrainingFailed, match=r"--study_dir=gs://bucket/study: cannot be made a folder \(a URL"):
        study.run_study("pose2d", "pose2d", config_lib.make_config("tiny"), "gs://bucket/study")
    assert not any(tmp_path.iterdir())


def test_a_study_under_tf_config_says_how_to_train_its_combinations_on_a_cluster(tmp_path, monkeypatch):
    """A cluster's strategy is made once per process, before TensorFlow starts; the study trains several models."""
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker"}}')
    monkeypatch.setattr(study, "train_combination", lambda config, workdir: pytest.fail("trained under TF_CONFIG"))
    with pytest.raises(trainer.TrainingFailed, match=re.escape(f"--workdir={tmp_path}/runs/<tasks joined by +>")):
        study.run_study("pose2d", "paper", config_lib.make_config("tiny"), str(tmp_path))
    assert not any(tmp_path.iterdir()), "nothing written"
