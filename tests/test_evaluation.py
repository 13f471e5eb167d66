"""The held-out evaluation reduces label maps batch by batch: its figures are those of the whole split at once."""

import numpy as np
import pytest
import tensorflow as tf

from mtha_tf import metrics, surreal
from mtha_tf.evaluation import evaluate, evaluation_dataset
from mtha_tf.evaluation import part_errors as part_errors_of

INPUT_SIZE = 64


def _depth_logits(images):
    """A fixed stand-in network: per-pixel depth scores from the pooled colours, so the bins vary inside each frame
    and the foreground is partly right, partly wrong."""
    pooled = tf.nn.avg_pool2d(images, 4, 4, "VALID")
    projection = np.random.default_rng(3).normal(size=(3, 20))
    projection[0, 0] = 4.0  # background where red is strong
    return {"depth": tf.einsum("bhwc,ck->bhwk", pooled, tf.constant(projection, tf.float32))}


@pytest.mark.parametrize("batch_size", [1, 4])
def test_depth_figures_do_not_depend_on_the_evaluation_batch(records_dir, batch_size):
    pattern = str(records_dir / "val-*")
    inputs, targets = next(iter(evaluation_dataset(pattern, ["depth"], 100, INPUT_SIZE)))  # the whole split
    pred = tf.argmax(_depth_logits(inputs["image"])["depth"], axis=-1).numpy()
    gt, parts = targets["depth"].numpy(), targets["segmentation"].numpy()
    assert len(gt) == 6 and 0.2 < (pred > 0).mean() < 0.8, "the stand-in predicts foreground and background"

    results, per_frame = evaluate(_depth_logits, pattern, ["depth"], batch_size, INPUT_SIZE)
    depth = results["depth"]
    step_mm = 45.0
    assert depth["rmse_bins"] == pytest.approx(np.nanmean(metrics.depth_rmse_bins(pred, gt)))
    assert depth["rmse_mm_foreground_union"] == pytest.approx(
        step_mm * np.nanmean(metrics.depth_rmse_bins_union(pred, gt))
    )
    assert depth["foreground_iou"] == pytest.approx(metrics.foreground_iou(pred, gt))
    np.testing.assert_allclose(list(depth["rmse_mm_per_part"].values()),
                               step_mm * metrics.depth_rmse_per_part(pred, gt, parts))  # fmt: skip
    np.testing.assert_allclose(per_frame["depth"], step_mm * metrics.depth_rmse_bins(pred, gt))


def test_an_evaluation_counts_its_frames_when_asked(records_dir, capsys):
    """SURREAL's test split takes hours to evaluate; `python -m mtha_tf.evaluate` and the study said nothing until the
    end. Training's evaluations stay quiet (Keras' progress is on screen)."""
    pattern = str(records_dir / "val-*")
    evaluate(_depth_logits, pattern, ["depth"], 4, INPUT_SIZE)
    assert capsys.readouterr().err == ""
    evaluate(_depth_logits, pattern, ["depth"], 4, INPUT_SIZE, progress=True)
    assert f"evaluating {pattern}: 6 frames" in capsys.readouterr().err


def test_a_frame_stride_evaluates_the_frames_whose_index_it_divides(records_dir, tmp_path):
    """Training evaluates every eval_frame_stride-th frame of each held-out clip (SURREAL's val split: ~50k frames)."""
    pattern = str(records_dir / "val-*")
    for stride, frames in ((1, [0, 1, 2, 3, 4, 5]), (2, [0, 2, 4]), (4, [0, 4])):
        inputs, _ = next(iter(evaluation_dataset(pattern, ["depth"], 100, INPUT_SIZE, frame_stride=stride)))
        assert sorted(inputs["frame"].numpy().tolist()) == frames
        results, per_frame = evaluate(_depth_logits, pattern, ["depth"], 2, INPUT_SIZE, frame_stride=stride)
        assert results["num_frames"] == len(per_frame["depth"]) == len(frames)
    # Shards whose frames the stride all passes over: an error naming them and the stride, not a crash on no metrics.
    odd_frames = tmp_path / "val-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(odd_frames)) as writer:
        for serialized in tf.data.TFRecordDataset(sorted(map(str, records_dir.glob("val-*")))).skip(1).take(1):
            writer.write(serialized.numpy())
    with pytest.raises(FileNotFoundError, match=f"{odd_frames}: no frame whose index in its clip is a multiple of 2"):
        evaluate(_depth_logits, str(odd_frames), ["depth"], 2, INPUT_SIZE, frame_stride=2)


def _depth_and_part_logits(images):
    """The depth stand-in, and part scores from the same pooled colours (15 classes)."""
    pooled = tf.nn.avg_pool2d(images, 4, 4, "VALID")
    projection = tf.constant(np.random.default_rng(5).normal(size=(3, 15)), tf.float32)
    return {**_depth_logits(images), "segmentation": tf.einsum("bhwc,ck->bhwk", pooled, projection)}


def test_per_frame_errors_per_part_are_each_frames_own(records_dir):
    """Paper Fig. 3 draws a part's success rate: each frame's error on that part, NaN where the frame does not show it;
    the pooled per-part figures of the tables, and Fig. 4(b)'s per-part pixel accuracy, come from the same pixels."""
    pattern = str(records_dir / "val-*")
    inputs, targets = next(iter(evaluation_dataset(pattern, ["depth", "segmentation"], 100, INPUT_SIZE)))
    outputs = _depth_and_part_logits(inputs["image"])
    depth_pred, part_pred = (tf.argmax(outputs[t], axis=-1).numpy() for t in ("depth", "segmentation"))
    gt, parts = targets["depth"].numpy(), targets["segmentation"].numpy()

    results, per_frame = evaluate(_depth_and_part_logits, pattern, ["depth", "segmentation"], 4, INPUT_SIZE)
    depth_errors, part_errors = per_frame[part_errors_of("depth")], per_frame[part_errors_of("segmentation")]
    assert depth_errors.shape == part_errors.shape == (6, 15)
    per_image = metrics.depth_squared_errors_per_part(depth_pred, gt, parts)
    np.testing.assert_allclose(depth_errors, 45.0 * metrics.rmse_from_squared_errors(per_image), rtol=1e-6)
    shown = np.stack([(parts == p).any(axis=(1, 2)) for p in range(15)], axis=1)
    assert (np.isfinite(part_errors) == shown).all() and 0 < np.nanmean(part_errors) < 1
    np.testing.assert_allclose(part_errors, metrics.pixel_error_per_class(part_pred, parts), rtol=1e-6)
    accuracy = results["segmentation"]["pixel_accuracy_per_part"]
    correct = [((part_pred == p) & (parts == p)).sum() / (parts == p).sum() for p in range(15)]
    np.testing.assert_allclose(list(accuracy.values()), correct)
    assert list(accuracy) == list(surreal.PART_NAMES)


def test_each_models_forward_pass_is_traced_without_a_retracing_warning(caplog):
    """A study trains and evaluates one model after another in one process, each with its own forward pass traced
    once: TensorFlow counted those traces together and warned of "excessive number of tracings" from the third."""
    from mtha_tf import config as config_lib
    from mtha_tf.evaluation import forward_function
    from mtha_tf.model import build_model_for

    model = build_model_for(config_lib.make_config("tiny", tasks="pose2d"))
    images = tf.zeros([2, INPUT_SIZE, INPUT_SIZE, 3])
    for batch in (images, images, images[:1]):  # one trace per model, whatever the batch
        outputs = [forward_function(model)(batch) for _ in range(3)]
    assert outputs[0]["pose2d"].shape[0] == 1
    assert "retracing" not in caplog.text
