"""The study's figures: the best multi-task combination, its gain per part over the task alone (paper Fig. 4) and
the success-rate curves of the part it improves most (Fig. 3)."""

import math
import os

from mtha_tf import evaluation, report


def improvement_per_part(single, multi, task, key=None):
    """{part: gain of `multi` over `single`} for one task's per-part results `key` (default: its table's) in the
    table's unit, positive = better (paper Fig. 4)."""
    table_key, _, higher_better = report.TABLES[task]
    key = key or table_key
    sign = 1.0 if higher_better else -1.0
    left_out = ("background", *report.LEFT_OUT.get(task, ()))  # and the pelvis: 0 mm in every 3D model
    return {part: sign * report.shown(task, multi[task][key][part] - single[task][key][part])
            for part in report.ROWS[task] if part in single[task][key] and part not in left_out}  # fmt: skip


def most_improved(gains):
    """The part with the largest gain, or None when no gain is a number."""
    finite = {part: gain for part, gain in gains.items() if not math.isnan(gain)}
    return max(finite, key=finite.get) if finite else None


def best_multi_task(results, target_task):
    """The name of the multi-task combination with the best summary value for the target task, or None."""
    _, _, higher_better = report.TABLES[target_task]
    key = report.SUMMARY[target_task]
    multi = {name: r[target_task][key] for name, r in results.items() if "+" in name}
    if not multi:
        return None
    return (max if higher_better else min)(multi, key=multi.get)


# Fig. 4's panels per task: its table's per-part values, and for segmentation the per-part pixel accuracy too (b).
IMPROVEMENT_PANELS = {task: ((key, label),) for task, (key, label, _) in report.TABLES.items()}
IMPROVEMENT_PANELS["segmentation"] += (("pixel_accuracy_per_part", "pixel accuracy (%)"),)


def plot_improvement(single, multi, task, title, path):
    """Paper Fig. 4: per part, the gain of the `multi` results over the `single` ones, a panel per IMPROVEMENT_PANELS
    entry of `task`."""
    plt = report.pyplot()
    panels = IMPROVEMENT_PANELS[task]
    parts = list(improvement_per_part(single, multi, task))
    figure, axes = plt.subplots(1, len(panels), figsize=(max(6, 0.5 * len(parts)) * len(panels), 3.5), squeeze=False)
    for axis, (key, unit) in zip(axes[0], panels, strict=True):
        gains = improvement_per_part(single, multi, task, key)
        values = [0.0 if math.isnan(gains[p]) else gains[p] for p in parts]
        axis.bar(parts, values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set(title=title, ylabel=f"gain over the task alone\n{unit}, positive = better")
        axis.tick_params(axis="x", rotation=60)
    figure.tight_layout()
    return report.save_figure(figure, path)


def part_curves(per_frame, target_task, best, part):
    """Fig. 3's part panel: (title, task, {model: per-frame errors of `part`}) for the task alone (its run is named
    after it) and the best multi-task model."""
    column, index = evaluation.part_errors(target_task), report.ROWS[target_task].index(part)
    curves = {name: per_frame[name][column][:, index] for name in (target_task, best)}
    return f"{target_task}: {part} (most improved)", target_task, curves


def write_figures(results, per_frame, target_task, out_dir):
    """Writes success_rates.png (Fig. 3: every combination, and the most improved part alone vs the best multi-task
    model) and improvement.png (Fig. 4) to `out_dir`; returns the best multi-task combination (None if none)."""
    best, part_panels = best_multi_task(results, target_task), []
    if best and target_task in results:
        title = f"{target_task}: {best} vs {target_task} alone"
        plot_improvement(results[target_task], results[best], target_task, title,
                         os.path.join(out_dir, "improvement.png"))  # fmt: skip
        if part := most_improved(improvement_per_part(results[target_task], results[best], target_task)):
            part_panels.append(part_curves(per_frame, target_task, best, part))
    report.plot_success_rates({n: {target_task: e[target_task]} for n, e in per_frame.items()},
                              os.path.join(out_dir, "success_rates.png"), part_panels)  # fmt: skip
    return best
