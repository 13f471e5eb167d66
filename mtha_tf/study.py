r"""The paper's study: one model per task combination, compared part by part on the same held-out data.

    python -m mtha_tf.study --target_task=depth|...|all [--combinations=paper] [--study_dir=study]
        [--split=val|test] [--preset=...] [...]

For the target task it trains (or reuses) every combination that contains it -- the paper's 8 per task: the task alone
plus each subset of the other three -- evaluates all of them on the same held-out frames and writes, under
`study_dir/<target_task>/` (`<target_task>_test/` for --split=test, `..._every<K>/` for --frame_stride=K, as
`mtha_tf.evaluate` names its folders): `<target_task>.md/.csv` (one column per combination, the rows of the paper's
Tables I-IV, best per row marked), `success_rates.png` (Fig. 3), `improvement.png` (Fig. 4: the best multi-task
model's gain per part over the single-task model) and `results.json`; and `study_dir/state_of_the_art.md/.csv` (the
paper's Table V, from every target studied in the study dir so far). Runs live in `study_dir/runs/<tasks>/`; a
finished one is reused, an interrupted one resumes, so running the same command again continues the study.
`--target_task=all` studies the four targets in turn (each combination trained and evaluated once).
"""

import dataclasses
import functools
import itertools
import json
import os
import sys

from mtha_tf import cpu_runtime

if __name__ == "__main__":  # `python -m mtha_tf.study` trains: train.py's process settings, before TensorFlow starts
    cpu_runtime.configure_for_training()

from absl import app, flags  # noqa: E402

from mtha_tf import (  # noqa: E402
    atomic_files,
    evaluate,
    evaluation,
    report,
    state_of_the_art,
    study_figures,
    tasks,
    trainer,
    training_data,
)
from mtha_tf import config as config_lib  # noqa: E402
from mtha_tf.data.pipeline import require_examples  # noqa: E402


def combinations(target_task, which="paper"):
    """The combinations a study trains, as task tuples in canonical order. "paper": the target alone, then with every
    subset of the other tasks (8); "all": every non-empty subset of the four tasks (15: the target's table shows its
    8, and a study of another target in the same study dir reuses the rest); else an explicit list like
    "pose2d;pose2d,depth", each containing the target (ValueError otherwise)."""
    if which == "paper":
        others = [t for t in tasks.TASKS if t != target_task]
        subsets = [c for size in range(len(others) + 1) for c in itertools.combinations(others, size)]
        return [tasks.parse_tasks((target_task, *subset)) for subset in subsets]
    if which == "all":
        return [tasks.parse_tasks(c) for size in range(1, 5) for c in itertools.combinations(tasks.TASKS, size)]
    chosen = _listed(which)
    if without := [run_name(c) for c in chosen if target_task not in c]:
        raise ValueError(f"combinations {without} do not contain the target task {target_task}")
    return chosen


def _listed(which):
    """The combinations of a list like "pose2d;pose2d,depth", each once; ValueError for none or an unknown task."""
    if chosen := list(dict.fromkeys(tasks.parse_tasks(spec) for spec in which.split(";") if spec.strip())):
        return chosen
    raise ValueError(f"no combination in {which!r}; expected 'paper', 'all' or a list like 'depth;depth,pose2d'")


def run_name(task_names):
    return "+".join(task_names)


def _shared_data_dir(config, study_dir):
    """Every combination trains and is evaluated on the same records: `config.data_dir`, or the embedded data
    generated once for the whole study, as an absolute path (the runs' config.json then name the same shards from any
    folder, as train.py's --data_dir; a relative --study_dir made them relative)."""
    if config.data_dir:
        return config.data_dir
    train_pattern, _ = training_data.data_patterns(config, study_dir)
    return os.path.abspath(os.path.dirname(train_pattern))


def check_combination(config, workdir):
    """TrainingFailed unless `workdir` is new or holds a run of `config` (its shards possibly at another path)."""
    same_data = functools.partial(training_data.same_shards, workdir, config.data_dir)
    if why := config_lib.differing_run(os.path.join(workdir, "config.json"), config, same_data):
        raise trainer.TrainingFailed(f"{why}; use a new --study_dir for this one")


def train_combination(config, workdir):
    """Trains unless `workdir` already holds a finished run of the same config (an unfinished one resumes, a finished
    one with fewer epochs trains on); `check_combination` has passed. A finished run whose shards are now at
    `config.data_dir` (the study dir moved, or copied from a cluster) records that path."""
    metrics_path = os.path.join(workdir, "metrics.json")  # written last: the epochs of the last finished training
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(metrics_path) or _read_json(metrics_path).get("epochs") != config.epochs:
        trainer.train(config, workdir)
    elif (saved := config_lib.load(config_path)).data_dir != config.data_dir:
        config_lib.save(dataclasses.replace(saved, data_dir=config.data_dir), config_path)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def train_all(runs, study_dir):
    """Trains (or reuses) every run {name: config} in `study_dir/runs/<name>`, each run dir checked before any trains.
    A combination another process is training (the four targets' studies started at once in one study dir, one per
    GPU, share runs) is left to it and waited for after the others; one whose training fails (a non-finite loss) does
    not stop the others, which may take days at paper scale: TrainingFailed naming every failed one at the end."""
    for name, config in runs.items():
        check_combination(config, os.path.join(study_dir, "runs", name))
    pending, failed, waiting = list(runs), [], False
    while pending:
        held = []
        for name in pending:
            workdir = os.path.join(study_dir, "runs", name)
            if waiting:
                trainer.wait_until_released(workdir)
            try:
                train_combination(runs[name], workdir)
            except trainer.WorkDirHeld as error:  # again, after the wait, if a third process took it meanwhile
                print(f"note: {error.folder} is being trained by {error.holder}; the study trains its other "
                      "combinations first, then waits for it", file=sys.stderr)  # fmt: skip
                held.append(name)
            except trainer.TrainingFailed as error:
                print(f"error: {name}: {error}; the study goes on with its other combinations", file=sys.stderr)
                failed.append(name)
        pending, waiting = held, True
    if failed:
        names = ", ".join(failed)
        raise trainer.TrainingFailed(f"{len(failed)} of {len(runs)} combinations failed ({names}: see above); the "
                                     "others are trained, and the study reuses them when run again")  # fmt: skip


def run_study(target_task, which, base_config, study_dir, split="val", frame_stride=1, reuse=True):
    """Trains/reuses, evaluates on `split` (the frames whose index in their clip is a multiple of `frame_stride`) and
    reports; returns {run name: results dict}. A run's evaluation already made of its final weights on the same frames
    is reused (`reuse`; evaluate.evaluate_workdir): the studies of the four targets share most runs, and SURREAL's test
    split holds ~1.2 M frames."""
    if trainer.cluster_config():  # before any TensorFlow op: a traceback from tf.distribute otherwise
        raise trainer.TrainingFailed(
            "TF_CONFIG is set, but a study trains its combinations one after another in one process, which a "
            "cluster's MultiWorkerMirroredStrategy cannot; train each combination on the cluster with train.py "
            f"(--workdir={os.path.join(study_dir, 'runs', '<tasks joined by +>')} and the study's other flags), then "
            "run the study without TF_CONFIG: it reuses the finished runs"
        )
    try:
        atomic_files.make_folder(study_dir, "study_dir")
    except NotADirectoryError as error:
        raise trainer.TrainingFailed(str(error)) from None
    data_dir = _shared_data_dir(base_config, study_dir)
    held_out = evaluate.held_out_pattern(base_config, study_dir, data_dir, split)
    try:
        require_examples(held_out)  # FileNotFoundError now, not after training every combination
    except FileNotFoundError as error:
        if base_config.data_dir or split != "test":
            raise
        raise FileNotFoundError(f"{error}: the study's embedded data has no test split; for SURREAL's, converted by "
                                "data_prep.surreal, name it with --data_dir") from None  # fmt: skip
    runs = {run_name(c): dataclasses.replace(base_config, tasks=",".join(c), data_dir=data_dir)
            for c in combinations(target_task, which)}  # fmt: skip
    train_all(runs, study_dir)
    results, per_frame = {}, {}
    for name, config in runs.items():
        if target_task in config.task_names():
            results[name], errors = evaluate.evaluate_workdir(
                os.path.join(study_dir, "runs", name),
                data_dir,
                split,
                frame_stride,
                reuse=reuse,
                batch_size=base_config.eval_batch_size,
                progress=True,
            )
            # The target's errors only: on SURREAL's test split a four-task run's per-frame errors hold ~300 MB.
            per_frame[name] = {key: errors[key] for key in (target_task, evaluation.part_errors(target_task))}

    out_dir = evaluate.split_dir(os.path.join(study_dir, target_task), split, frame_stride)
    report.write_tables(results, out_dir, [target_task])
    best = study_figures.write_figures(results, per_frame, target_task, out_dir)
    summary = {"target_task": target_task, "best_multi_task": best, "held_out": held_out, "results": results}
    atomic_files.write_json(os.path.join(out_dir, "results.json"), summary)
    state_of_the_art.write_table(study_dir, evaluate.split_dir("", split, frame_stride))  # with the other targets'
    return results


def studies(target_task, which="paper"):
    """{target: its combinations (`combinations`' `which`)} for --target_task: one task, or "all", the four targets in
    turn (the paper's Tables I-IV; each of the 15 combinations trained and evaluated once), with an explicit list each
    target taking the listed combinations that contain it."""
    if target_task != "all":
        return {target_task: which}
    if which in ("paper", "all"):
        return dict.fromkeys(tasks.TASKS, "paper")
    chosen = _listed(which)
    return {target: ";".join(",".join(c) for c in chosen if target in c)
            for target in tasks.TASKS if any(target in c for c in chosen)}  # fmt: skip


def _are_valid_combinations(values):
    try:
        chosen = studies(values["target_task"], values["combinations"])
        return all(combinations(target, which) for target, which in chosen.items())
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None


def _print_summary(task, results, out_dir):
    key, unit = report.SUMMARY[task], " (%)" if task in report.IN_PERCENT else ""  # the tables' unit
    for name, result in results.items():
        print(f"{name:40s} {task} {key}{unit}: {report.shown(task, result[task][key]):.2f}")
    if best := study_figures.best_multi_task(results, task):
        print(f"best multi-task combination: {best}")
    print(f"tables, plots and results.json in {out_dir}/")


def main(argv):
    del argv
    # The embedded data's converter, as training_data.data_patterns uses it.
    from data_prep.surreal import OtherConversion
    from mtha_tf.config_flags import config_from_flags

    values = flags.FLAGS
    try:
        # Every task: run_study gives each combination its own; the base keeps every --task_weights entry for them.
        config = config_from_flags(tasks=",".join(tasks.TASKS))
    except config_lib.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    suffix, failed = evaluate.split_dir("", values.split, values.frame_stride), []
    for task, which in studies(values.target_task, values.combinations).items():
        try:
            results = run_study(task, which, config, values.study_dir, values.split, values.frame_stride,
                                reuse=not values.reevaluate)  # fmt: skip
        except trainer.TrainingFailed as error:  # a combination failed: the other targets' studies go on
            print(f"error: {task}: {error}", file=sys.stderr)
            failed.append(task)
            continue
        except (config_lib.ConfigError, FileNotFoundError, OtherConversion) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        _print_summary(task, results, os.path.join(values.study_dir, task + suffix))
    table_v = state_of_the_art.table_path(values.study_dir, suffix)
    print(f"the paper's Table V, with every target studied in {values.study_dir}: {table_v}")
    if failed:
        print(f"error: the studies of {', '.join(failed)} did not finish (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    from mtha_tf import config_flags

    config_flags.define_config_flags(exclude=("tasks",))
    flags.adopt_module_key_flags(config_flags)  # --help lists them with the study's own flags
    flags.DEFINE_enum("target_task", None, [*tasks.TASKS, "all"], 'The task whose tables the study writes; "all": '
                      "the four in turn (Tables I-IV), each combination trained and evaluated once.",
                      required=True)  # fmt: skip
    flags.DEFINE_string("combinations", "paper", '"paper" (8 combinations with the target), "all" (all 15: trains '
                        'those of the other targets\' tables too), or a list like "pose2d;pose2d,depth".')  # fmt: skip
    flags.register_multi_flags_validator(["target_task", "combinations"], _are_valid_combinations)
    flags.DEFINE_string("study_dir", "study", "Holds the runs, the shared embedded data and the reports.")
    flags.DEFINE_enum("split", "val", evaluate.SPLITS, "The held-out split the combinations are compared on.")
    flags.DEFINE_bool(
        "reevaluate",
        False,
        "Evaluate every combination again, even one already evaluated from the same "
        "weights on the same frames (reused by default; redo after changing the metrics' code).",
    )
    flags.DEFINE_integer("frame_stride", 1, "Compare on the held-out frames whose index in their clip is a multiple "
                         "of this; 1: every frame (SURREAL's test split holds ~1.2 M, for each combination).",
                         lower_bound=1)  # fmt: skip
    app.run(main)
