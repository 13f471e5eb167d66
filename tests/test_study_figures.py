"""The study's figures: the improvement rule (paper Fig. 4) and the part curves of Fig. 3."""

import numpy as np
import pytest

from mtha_tf import study_figures, surreal


def test_improvement_is_positive_when_the_multi_task_model_is_better():
    single = {"depth": {"rmse_mm_per_part": {"torso": 50.0, "head": 100.0}},
              "pose2d": {"pckh_per_joint": {"head_top": 80.0}}}  # fmt: skip
    multi = {"depth": {"rmse_mm_per_part": {"head": 90.0, "torso": 55.0}},
             "pose2d": {"pckh_per_joint": {"head_top": 85.0}}}  # fmt: skip
    gains = study_figures.improvement_per_part(single, multi, "depth")
    assert gains == {"head": 10.0, "torso": -5.0} and list(gains) == ["head", "torso"], "the paper's order"
    assert study_figures.improvement_per_part(single, multi, "pose2d") == {"head_top": 5.0}
    summaries = {"depth": {"depth": {"rmse_mm": 80.0}}, "depth+pose2d": {"depth": {"rmse_mm": 70.0}},
                 "segmentation+depth": {"depth": {"rmse_mm": 75.0}}}  # fmt: skip
    assert study_figures.best_multi_task(summaries, "depth") == "depth+pose2d"


def _pose3d_results(mjd_per_joint):
    return {"pose3d": {"mjd_mm_per_joint": dict(zip(surreal.MPII_JOINT_NAMES, mjd_per_joint, strict=True)),
                       "mjd_mm": float(np.mean(mjd_per_joint))}}  # fmt: skip


def test_the_figures_show_the_part_the_best_multi_task_model_improves_most(tmp_path, monkeypatch):
    """Paper Fig. 3: beside every combination's curve, the success rate of the part the best multi-task model improves
    most, the task alone against that model; Fig. 4: the gain per part, for segmentation in IoU and pixel accuracy."""
    alone = np.full(16, 60.0)
    better = alone.copy()
    better[[0, 15]] = [55.0, 40.0]  # the best improves the right ankle by 5 mm and the left wrist by 20 mm
    results = {"pose3d": _pose3d_results(alone), "pose3d+depth": _pose3d_results(better),
               "pose3d+segmentation": _pose3d_results(alone + 1)}  # fmt: skip
    rng = np.random.default_rng(0)
    per_frame = {name: {"pose3d": rng.random(4) * 100, "pose3d_per_part": rng.random((4, 16)) * 100}
                 for name in results}  # fmt: skip
    panels = []
    monkeypatch.setattr(study_figures.report, "plot_success_rates", lambda *args: panels.append(args))
    assert study_figures.write_figures(results, per_frame, "pose3d", str(tmp_path)) == "pose3d+depth"
    ((overall, path, part_panels),) = panels
    assert set(overall) == set(results) and path.endswith("success_rates.png")
    ((title, task, curves),) = part_panels
    assert (title, task) == ("pose3d: l_wrist (most improved)", "pose3d") and list(curves) == ["pose3d", "pose3d+depth"]
    np.testing.assert_array_equal(curves["pose3d+depth"], per_frame["pose3d+depth"]["pose3d_per_part"][:, 15])
    assert (tmp_path / "improvement.png").stat().st_size > 0

    figures = []
    monkeypatch.setattr(study_figures.report, "save_figure", lambda figure, path: figures.append(figure))
    segmentation = {"iou_per_part": dict.fromkeys(surreal.PART_NAMES, 0.5),
                    "pixel_accuracy_per_part": dict.fromkeys(surreal.PART_NAMES, 0.6)}  # fmt: skip
    improved = {"iou_per_part": {**segmentation["iou_per_part"], "l_foot": 0.55},
                "pixel_accuracy_per_part": {**segmentation["pixel_accuracy_per_part"], "l_hand": 0.7}}  # fmt: skip
    study_figures.plot_improvement({"segmentation": segmentation}, {"segmentation": improved}, "segmentation", "t",
                                   str(tmp_path / "s.png"))  # fmt: skip
    iou, accuracy = figures[0].axes
    assert [axis.get_ylabel().split("\n")[1] for axis in (iou, accuracy)] == [
        "IoU (%), positive = better",
        "pixel accuracy (%), positive = better",
    ]
    heights = [{t.get_text(): bar.get_height() for t, bar in zip(axis.get_xticklabels(), axis.patches, strict=True)}
               for axis in (iou, accuracy)]  # fmt: skip
    assert heights[0]["l_foot"] == pytest.approx(5.0) and heights[1]["l_hand"] == pytest.approx(10.0)
    assert heights[0]["l_hand"] == heights[1]["l_foot"] == 0.0 and "background" not in heights[0]
