"""The paper's Table V (state-of-the-art comparison on SURREAL) from a study dir: this study's single-task models and
its best multi-task models beside the published figures of BodyNet (Varol et al., the paper's [16]) and the paper.

Every study command rewrites it from the targets studied so far in its study dir (`<study_dir>/<task>/results.json`),
so after the studies of segmentation, 2D pose and 3D pose (and depth, a column Table V leaves out) it is complete.
"""

import csv
import json
import os

from mtha_tf import atomic_files, file_locks, report

# Table V's columns: the task, its header and its value from the task's results, measured as the paper's rows are:
# segmentation IoU without the background (as [16]), PCKh averaged over the 16 joints (Table III's mean: 96.5) and MJD
# over the 15 joints without the pelvis (Table II's mean: 60.1). Depth, which [16] does not estimate, last.
COLUMNS = (
    ("segmentation", "Seg. IoU (%), 14 parts", lambda r: report.shown("segmentation", r["mean_iou_parts"])),
    ("pose2d", "2D pose PCKh (%), 16 joints", report.SUMMARY_ROWS["pose2d"][0][1]),
    ("pose3d", "3D pose MJD (mm), 15 joints", report.SUMMARY_ROWS["pose3d"][0][1]),
    ("depth", "Depth RMSE (mm), full body", lambda r: r["rmse_mm"]),
)
# The paper's Table V, in COLUMNS' order (None: not reported).
PUBLISHED = (
    ("Varol et al. [16], independent tasks", (59.2, 82.7, 46.1, None)),
    ("Varol et al. [16], multi-task", (69.2, 90.8, 40.8, None)),
    ("Sánchez et al. (the paper), independent tasks", (65.3, 96.5, 60.1, None)),
    ("Sánchez et al. (the paper), multi-task", (66.1, 97.0, 57.0, None)),
)
NOT_STUDIED = "–"


def _study_results(results_path):
    try:
        with open(results_path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def study_rows(summaries):
    """This study's rows from {task: the task's study summary (its results.json) or None}: the task alone, the best
    multi-task combination (by the study's choice, as in its Figs. 3-4) and that combination's name, per column."""
    alone, multi, names = [], [], []
    for task, _, value_of in COLUMNS:
        summary = summaries.get(task) or {"results": {}, "best_multi_task": None}
        results, best = summary["results"], summary["best_multi_task"]
        alone.append(value_of(results[task][task]) if task in results else None)
        multi.append(value_of(results[best][task]) if best else None)
        names.append(best or NOT_STUDIED)
    return [("this study, independent tasks", alone), ("this study, multi-task", multi)], names


def table_path(study_dir, suffix="", ext="md"):
    return os.path.join(study_dir, f"state_of_the_art{suffix}.{ext}")


def write_table(study_dir, suffix=""):
    """Writes `<study_dir>/state_of_the_art<suffix>.md` and `.csv` from the study summaries
    `<study_dir>/<task><suffix>/results.json` (suffix: the split and frame stride the studies compared on, as
    `evaluate.split_dir` names them: "_test", "_every10"); returns the Markdown path."""
    # The studies of several targets finishing at once in one study dir: each reads the summaries and writes the table
    # in turn, so the last one to write has read every summary written before.
    with file_locks.flocked(os.path.join(study_dir, ".state_of_the_art.lock")):
        return _write_table(study_dir, suffix)


def _write_table(study_dir, suffix):
    summaries = {task: _study_results(os.path.join(study_dir, task + suffix, "results.json")) for task, *_ in COLUMNS}
    ours, best_names = study_rows(summaries)
    header = ["", *(label for _, label, _ in COLUMNS)]
    rows = [[label, *values] for label, values in (*PUBLISHED, *ours)]
    # The published figures to the digit the paper gives, this study's to the tables' two decimals.
    cells = [[label, *(NOT_STUDIED if v is None else f"{v:.{1 if i < len(PUBLISHED) else 2}f}" for v in values)]
             for i, (label, *values) in enumerate(rows)]  # fmt: skip
    best_row = ["this study, best multi-task combination", *best_names]
    markdown = report.markdown_table(header, [*cells, best_row])
    missing = [task for task, summary in summaries.items() if summary is None]
    notes = [
        "",
        f"Published rows: the paper's Table V (SURREAL). This study's: {study_dir}, the held-out frames of "
        f"{next((s['held_out'] for s in summaries.values() if s), 'its studies')}.",
    ]
    if missing:
        notes.append(f"{NOT_STUDIED}: not studied yet (`python -m mtha_tf.study --target_task=T` with this study's "
                     f"--study_dir, --split and other flags, for T in {', '.join(missing)}).")  # fmt: skip
    md_path, csv_path = table_path(study_dir, suffix), table_path(study_dir, suffix, "csv")
    atomic_files.write_text(md_path, "\n".join(markdown + notes) + "\n")
    with atomic_files.replacing(csv_path) as partial, open(partial, "w", newline="") as f:
        csv.writer(f).writerows([header, *[["" if v is None else v for v in row] for row in rows], best_row])
    return md_path
