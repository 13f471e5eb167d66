"""The tables are laid out as the paper's Tables I-IV: its rows, and its means computed from its own columns."""

import json
import math

import pytest

from mtha_tf import report, study_figures, surreal

# The single-task column of each of the paper's tables (multitask_human_analysis.md), in its row order, with the mean
# rows it prints under them. Table IV is in depth bins; the mean rows do not depend on the unit.
TABLE_I_SEGMENTATION = [98.0329, 74.3689, 84.6390, 65.8220, 62.0338, 49.3243, 65.4599, 60.5462, 48.9188, 75.2125,
                        71.4514, 55.2237, 75.2612, 71.4049, 54.6201]  # fmt: skip
TABLE_I_MEAN = 67.4880
# Table II has no pelvis row.
TABLE_II_POSE3D = [86.1138, 59.9885, 25.6693, 25.4341, 56.9181, 87.7192, 31.2580, 44.5032, 49.6059, 103.3092,
                   70.3126, 46.1421, 47.4316, 67.3347, 100.3381]  # fmt: skip
TABLE_II_MEAN = 60.1386
TABLE_III_POSE2D = [95.8064, 97.0326, 99.0109, 99.1253, 97.376, 96.3214, 99.4687, 99.3787, 99.0763, 98.7738,
                    88.9970, 94.3023, 98.3569, 98.0136, 93.9099, 89.1850]  # fmt: skip
TABLE_III_MEAN = 96.5085
TABLE_IV_DEPTH = [0.5151, 4.7828, 2.7179, 3.8742, 5.4385, 7.0447, 3.7487, 5.4778, 7.1597, 3.3767, 5.2455, 7.8622,
                  3.3694, 5.1918, 7.8774]  # fmt: skip
TABLE_IV_MEAN_BODY_PARTS, TABLE_IV_MEAN_FULL_BODY = 4.9122, 4.39


def _paper_column():
    joints_3d = [name for name in surreal.MPII_JOINT_NAMES if name != "pelvis"]
    pose3d = dict(zip(joints_3d, TABLE_II_POSE3D, strict=True))
    return {
        "pose2d": {"pckh_per_joint": dict(zip(surreal.MPII_JOINT_NAMES, TABLE_III_POSE2D, strict=True)), "pckh": 96.1},
        "segmentation": {  # as the metrics give it: a fraction, which the table shows in percent as the paper
            "iou_per_part": {p: iou / 100 for p, iou in zip(surreal.PART_NAMES, TABLE_I_SEGMENTATION, strict=True)},
            "mean_iou_all": sum(TABLE_I_SEGMENTATION) / 15 / 100,
            "mean_iou_parts": 0.653,
        },
        "depth": {
            "rmse_mm_per_part": dict(zip(surreal.PART_NAMES, TABLE_IV_DEPTH, strict=True)),
            "rmse_mm": TABLE_IV_MEAN_FULL_BODY,
        },
        "pose3d": {"mjd_mm_per_joint": {**pose3d, "pelvis": 0.0}, "mjd_mm": sum(TABLE_II_POSE3D) / 16},
    }


@pytest.mark.parametrize(
    "task, rows, means",
    [
        ("segmentation", 15, [TABLE_I_MEAN, 65.3]),
        ("pose3d", 15, [TABLE_II_MEAN, sum(TABLE_II_POSE3D) / 16]),
        ("pose2d", 16, [TABLE_III_MEAN, 96.1]),
        ("depth", 15, [TABLE_IV_MEAN_BODY_PARTS, TABLE_IV_MEAN_FULL_BODY]),
    ],
)
def test_tables_have_the_papers_rows_and_reproduce_its_means(task, rows, means):
    header, table = report.table_rows(task, {"single": _paper_column(), "other": _paper_column()})
    assert header == [f"{task} {report.TABLES[task][1]}", "single", "other"]
    assert len(table) == rows + 2
    assert [row[0] for row in table[:rows]] == [
        name for name in (surreal.MPII_JOINT_NAMES if task.startswith("pose") else surreal.PART_NAMES)
        if not (task == "pose3d" and name == "pelvis")
    ]  # fmt: skip
    for row, mean in zip(table[rows:], means, strict=True):
        assert float(row[1].rstrip("*")) == pytest.approx(mean, abs=0.006), row[0]
    if task == "segmentation":  # the paper's digits, not 0.98 for every close value
        assert table[0][1:] == ["98.03*", "98.03*"] and table[1][1] == "74.37*"
    assert all(row[1].endswith("*") and row[2].endswith("*") for row in table), "ties are both best"


@pytest.mark.parametrize("task", list(report.TABLES))
def test_rows_keep_the_papers_order_in_results_read_back_from_json(task):
    """json.dump(sort_keys=True) sorts each per-part dict: a study's reused evaluations made alphabetical tables."""
    read_back = json.loads(json.dumps(_paper_column(), sort_keys=True))
    assert list(read_back[task][report.TABLES[task][0]]) == sorted(read_back[task][report.TABLES[task][0]])
    _, fresh = report.table_rows(task, {"a": _paper_column()})
    _, reused = report.table_rows(task, {"a": read_back})
    assert reused == fresh and [row[0] for row in reused[:2]] == list(report.ROWS[task][:2])


def test_segmentation_gains_are_in_points_of_iou():
    """The improvement plot (paper Fig. 4) shows the table's unit: Table I's seg. + depth column gains 0.84 points on
    the upper right arm over segmentation alone."""
    single, multi = _paper_column(), _paper_column()
    multi["segmentation"]["iou_per_part"]["r_upper_arm"] = 0.666616
    gains = study_figures.improvement_per_part(single, multi, "segmentation")
    assert gains["r_upper_arm"] == pytest.approx(0.8396) and gains["head"] == 0.0 and "background" not in gains


def test_the_best_of_each_row_is_marked_in_the_tasks_direction():
    better, worse = _paper_column(), _paper_column()
    worse["depth"]["rmse_mm_per_part"]["head"] = 9.0
    worse["pose2d"]["pckh_per_joint"]["head_top"] = math.nan
    _, depth = report.table_rows("depth", {"a": better, "b": worse})
    assert dict((r[0], r[1:]) for r in depth)["head"] == ["4.78*", "9.00"], "lower RMSE is better"
    _, pose2d = report.table_rows("pose2d", {"a": better, "b": worse})
    assert dict((r[0], r[1:]) for r in pose2d)["head_top"] == ["98.77*", "nan"]


def test_the_depth_table_says_how_its_millimetres_compare_with_the_papers_bins(tmp_path):
    """Table IV prints depth RMSE in bins of 45 mm (4.39 = 198 mm): a table in mm beside it needs the factor, in the
    Markdown a person reads; the CSV stays a plain table for programs."""
    column = _paper_column()
    column["depth"]["rmse_mm_per_part"] = {p: 45 * v for p, v in column["depth"]["rmse_mm_per_part"].items()}
    column["depth"]["rmse_mm"] = 45 * TABLE_IV_MEAN_FULL_BODY
    report.write_tables({"depth": column}, str(tmp_path), ["depth", "pose2d"])
    markdown = (tmp_path / "depth.md").read_text().splitlines()
    assert markdown[-1].startswith("RMSE in mm = 45 x the depth bins of the paper's Table IV: divide by 45")
    assert "4.39 bins, is 198 mm" in markdown[-1] and markdown[-2] == ""
    full_body = next(line for line in markdown if line.startswith("| mean full body"))
    assert float(full_body.split("|")[2]) / 45 == pytest.approx(TABLE_IV_MEAN_FULL_BODY)
    csv_text = (tmp_path / "depth.csv").read_text()
    assert csv_text.splitlines()[-1].startswith('"mean full body') and "divide" not in csv_text
    assert (tmp_path / "pose2d.md").read_text().splitlines()[-1].startswith("| PCKh, MPII's 14 joints")
