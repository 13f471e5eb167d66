"""Per-part tables laid out like the paper's Tables I-IV (Markdown and CSV) and success-rate plots (PNG)."""

import csv
import math
import os

import numpy as np

from mtha_tf import atomic_files, surreal

# For each task: the per-part entry of the results, how it is named in the table, and whether higher is better.
TABLES = {
    "pose2d": ("pckh_per_joint", "PCKh@0.5 (%)", True),
    "segmentation": ("iou_per_part", "IoU (%)", True),
    "depth": ("rmse_mm_per_part", "RMSE (mm)", False),
    "pose3d": ("mjd_mm_per_joint", "MJD (mm)", False),
}
SUMMARY = {"pose2d": "pckh", "segmentation": "mean_iou_parts", "depth": "rmse_mm", "pose3d": "mjd_mm"}
# Each table's rows in the paper's order. Not the order of the results' dicts: an evaluation read back from its
# results.json (the study reuses them) has its keys sorted, and the tables came out alphabetical.
ROWS = {"pose2d": surreal.MPII_JOINT_NAMES, "segmentation": surreal.PART_NAMES, "depth": surreal.PART_NAMES,
        "pose3d": surreal.MPII_JOINT_NAMES}  # fmt: skip
# The results hold IoU as a fraction (SURREAL's code, metrics.json); the tables show it in percent, as the paper's
# Table I: two decimals of a fraction showed 0.67 and 0.68 where the paper's combinations differ by tenths of a point.
IN_PERCENT = ("segmentation",)
# Printed under a task's Markdown table where its unit is not the paper's. Table IV gives depth RMSE in bins (the
# SURREAL code's unit: its 4.39 is 198 mm); the tables give millimetres, as SURREAL's paper and metrics.json do.
_BIN_MM = 1000 * surreal.DEPTH_STEP_M
NOTES = {
    "depth": f"RMSE in mm = {_BIN_MM:g} x the depth bins of the paper's Table IV: divide by {_BIN_MM:g} to compare "
    f"(its depth-alone mean full body, 4.39 bins, is {4.39 * _BIN_MM:.0f} mm).",
}


def shown(task, value):
    """A result of `task` in the unit its table shows."""
    return 100.0 * value if task in IN_PERCENT and value is not None else value


def _is_number(value):
    return value is not None and not math.isnan(value)


def _mean(per_part, leave_out=()):
    values = [v for part, v in per_part.items() if part not in leave_out and _is_number(v)]
    return float(np.mean(values)) if values else math.nan


# The paper's tables leave the pelvis out of Table II (every prediction is aligned to the truth there: 0 mm) and end
# each table with its own mean: Table I over the 15 classes (background included), Table II over 15 joints, Table III
# over all 16 joints, Table IV over the 15 rows ("Mean Body Parts") and the full-body RMSE ("Mean Full Body"). The
# reference code's figures (SUMMARY: SURREAL's mIoU without background, BodyNet's MJD over 16 joints, MPII's PCKh
# over 14) follow them, so a table compares with the paper and with the headline numbers.
LEFT_OUT = {"pose3d": ("pelvis",)}
SUMMARY_ROWS = {
    "pose2d": (("mean, 16 joints (Table III)", lambda r: _mean(r["pckh_per_joint"])),
               ("PCKh, MPII's 14 joints", lambda r: r["pckh"])),
    "segmentation": (("mean, 15 classes (Table I)", lambda r: r["mean_iou_all"]),
                     ("mean, 14 parts (SURREAL's mIoU)", lambda r: r["mean_iou_parts"])),
    "depth": (("mean body parts (Table IV)", lambda r: _mean(r["rmse_mm_per_part"])),
              ("mean full body (Table IV, SURREAL's)", lambda r: r["rmse_mm"])),
    "pose3d": (("mean, 15 joints (Table II)", lambda r: _mean(r["mjd_mm_per_joint"], LEFT_OUT["pose3d"])),
               ("mean, 16 joints (BodyNet's MJD)", lambda r: r["mjd_mm"])),
}  # fmt: skip
# Success-rate thresholds (paper Fig. 3): head lengths for 2D, pixel error rate for segmentation, mm for depth/3D.
THRESHOLDS = {
    "pose2d": np.linspace(0, 3.0, 61),
    "segmentation": np.linspace(0, 0.5, 51),
    "depth": np.linspace(0, 500, 51),
    "pose3d": np.linspace(0, 500, 51),
}
UNITS = {"pose2d": "error / head length", "segmentation": "pixel error rate", "depth": "RMSE (mm)",
         "pose3d": "MJD (mm)"}  # fmt: skip


def table_rows(task, columns):
    """columns: {model name: results dict} -> (header, rows) laid out as the paper's table for `task`: one row per
    part or joint, then the summary rows (SUMMARY_ROWS); the best value of each row is marked with '*'."""
    key, label, higher_better = TABLES[task]
    names = list(columns)
    parts = [p for p in ROWS[task] if p not in LEFT_OUT.get(task, ())]
    lines = [(part, lambda r, part=part: r[key].get(part, math.nan)) for part in parts] + list(SUMMARY_ROWS[task])
    rows = []
    for name, value_of in lines:
        values = [shown(task, value_of(columns[n][task])) for n in names]
        finite = [v for v in values if _is_number(v)]
        best = (max if higher_better else min)(finite) if finite else None
        cells = [(f"{v:.2f}" if _is_number(v) else "nan") + ("*" if len(names) > 1 and v == best else "")
                 for v in values]  # fmt: skip
        rows.append([name, *cells])
    return [f"{task} {label}", *names], rows


def markdown_table(header, rows):
    """The lines of a Markdown table: the header, its rule, one line per row (cells as strings)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def write_tables(columns, out_dir, tasks):
    """Writes `<task>.md` and `<task>.csv` for each task; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for task in tasks:
        header, rows = table_rows(task, columns)
        markdown = markdown_table(header, rows)
        if task in NOTES:
            markdown += ["", NOTES[task]]
        md_path, csv_path = os.path.join(out_dir, f"{task}.md"), os.path.join(out_dir, f"{task}.csv")
        atomic_files.write_text(md_path, "\n".join(markdown) + "\n")
        with atomic_files.replacing(csv_path) as partial, open(partial, "w", newline="") as f:
            csv.writer(f).writerows([header, *[[r[0], *[c.rstrip("*") for c in r[1:]]] for r in rows]])
        paths += [md_path, csv_path]
    return paths


def pyplot():
    """matplotlib's pyplot drawing off-screen (no display on servers), imported only where a plot is made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path):
    """Writes `figure` as a PNG under a temporary name, renames it when complete and frees the figure."""
    with atomic_files.replacing(path) as partial:
        figure.savefig(partial, dpi=100)
    pyplot().close(figure)
    return path


def plot_success_rates(per_frame_by_model, path, part_panels=()):
    """One panel per task: fraction of frames whose error is under each threshold, one curve per model. `part_panels`:
    further panels (title, task, {curve label: per-frame errors}), e.g. one part's curves (paper Fig. 3)."""
    from mtha_tf import metrics

    plt = pyplot()
    tasks = [t for t in THRESHOLDS if any(t in errors for errors in per_frame_by_model.values())]
    panels = [(task, task, {name: errors[task] for name, errors in per_frame_by_model.items() if task in errors})
              for task in tasks]  # fmt: skip
    panels += list(part_panels)
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), squeeze=False)
    for axis, (title, task, curves) in zip(axes[0], panels, strict=True):
        for label, errors in curves.items():
            finite = np.asarray(errors)[np.isfinite(errors)]  # the frames that show the part or joints
            axis.plot(THRESHOLDS[task], metrics.success_rate(finite, THRESHOLDS[task]), label=label)
        axis.set(title=title, xlabel=UNITS[task], ylabel="success rate", ylim=(0, 1.02))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
