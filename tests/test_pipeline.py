"""The tf.data pipeline: shapes, invariants under augmentation, graph == eager, determinism, corrupt shards."""

import collections
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mtha_tf import config as config_lib
from mtha_tf import surreal, tasks, training_data
from mtha_tf.data import augment, crop, schema
from mtha_tf.data.pipeline import CorruptRecordError, make_dataset, naming_corrupt_files
from mtha_tf.data.sample import make_sample
from mtha_tf.data.shards import converted_frames, records_to_read
from mtha_tf.evaluation import evaluate
from mtha_tf.targets.labels import SegmentationCodec

ALL = ",".join(tasks.TASKS)


def _frames(records_dir, split="train"):
    return [schema.parse_example(r) for r in tf.data.TFRecordDataset(sorted(map(str, records_dir.glob(f"{split}-*"))))]


def test_batches_have_the_documented_shapes(records_dir):
    dataset = make_dataset(str(records_dir / "train-*"), ALL, training=True, batch_size=4, input_size=64)
    inputs, targets = next(iter(dataset))
    assert list(inputs) == ["image"] and inputs["image"].shape == (4, 64, 64, 3)
    shapes = {name: (tuple(t.shape), t.dtype) for name, t in targets.items()}
    assert shapes == {
        "pose2d": ((4, 16, 16, 16), tf.float32),
        "segmentation": ((4, 16, 16), tf.int32),
        "depth": ((4, 16, 16), tf.int32),
        "pose3d": ((4, 16, 16, 304), tf.float32),
    }
    _, only = next(iter(make_dataset(str(records_dir / "train-*"), "depth", training=True, batch_size=2)))
    assert list(only) == ["depth"] and only["depth"].shape == (2, 64, 64)


def test_evaluation_batches_carry_what_metrics_need(records_dir):
    inputs, _ = next(iter(make_dataset(str(records_dir / "val-*"), "pose2d", training=False, batch_size=6)))
    assert inputs["joints2d"].shape == (6, 16, 2) and inputs["joints3d"].shape == (6, 16, 3)
    assert inputs["heatmap_matrix"].shape == (6, 3, 3) and inputs["pelvis_depth"].shape == (6,)
    np.testing.assert_allclose(inputs["pelvis_depth"], inputs["joints3d"][:, surreal.PELVIS, 2])
    assert np.all(inputs["head_length"].numpy() > 0) and sorted(inputs["frame"].numpy()) == list(range(6))


def test_invariants_hold_under_augmentation(records_dir):
    dataset = make_dataset(str(records_dir / "train-*"), ALL, training=True, batch_size=18, deterministic=True)
    _, targets = next(iter(dataset))
    segmentation, depth = targets["segmentation"].numpy(), targets["depth"].numpy()
    np.testing.assert_array_equal(segmentation == 0, depth == 0)
    pose2d, pose3d = targets["pose2d"].numpy(), targets["pose3d"].numpy().reshape(18, 64, 64, 16, 19)
    for i in range(18):
        for j in range(16):
            if pose2d[i, ..., j].max() < 1.0:  # joint outside the crop
                continue
            peak2d = np.unravel_index(pose2d[i, ..., j].argmax(), (64, 64))
            y, x, z = np.unravel_index(pose3d[i, :, :, j].argmax(), (64, 64, 19))
            assert (y, x) == peak2d
            if j == surreal.PELVIS:
                assert z + 1 == 10, "the pelvis is in z-bin 10"
    assert (segmentation > 0).mean() > 0.05, "the person fills a good part of the crop"


def test_flip_twice_is_the_identity():
    centre, scale = tf.constant([150.0, 110.0]), tf.constant(1.1)
    plain = crop.crop_matrix(centre, scale, 64, 20.0)
    mirror = crop.crop_matrix(centre, scale, 64, 20.0, flip=True) @ tf.linalg.inv(plain)
    np.testing.assert_allclose(mirror @ mirror, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(
        crop.transform_points(mirror, [[0.0, 5.0], [31.5, 7.0]]), [[63, 5], [31.5, 7]], atol=1e-4
    )
    for permutation in (surreal.JOINT_FLIP_PERMUTATION, surreal.PART_FLIP_PERMUTATION):
        np.testing.assert_array_equal(permutation[permutation], np.arange(len(permutation)))
    smpl_labels = tf.range(25)
    codec = SegmentationCodec()
    flipped = codec.encode(smpl_labels, flip=True).numpy()
    np.testing.assert_array_equal(surreal.PART_FLIP_PERMUTATION[flipped], codec.encode(smpl_labels))


def test_flipping_a_sample_twice_gives_the_unflipped_targets(records_dir):
    frame = _frames(records_dir)[4]
    plain = augment.no_augmentation()
    flipped = dict(plain, flip=tf.constant(True))
    task_names = tasks.TASKS
    _, base = make_sample(frame, task_names, plain, 64)
    _, mirrored = make_sample(frame, task_names, flipped, 64)
    unflip = surreal.JOINT_FLIP_PERMUTATION
    np.testing.assert_allclose(mirrored["pose2d"].numpy()[:, ::-1][..., unflip], base["pose2d"], atol=1e-6)
    np.testing.assert_array_equal(mirrored["depth"].numpy()[:, ::-1], base["depth"])
    np.testing.assert_array_equal(
        surreal.PART_FLIP_PERMUTATION[mirrored["segmentation"].numpy()[:, ::-1]], base["segmentation"]
    )


def test_each_op_gives_the_same_result_eagerly_and_inside_dataset_map(records_dir):
    serialized = next(iter(tf.data.TFRecordDataset(str(sorted(records_dir.glob("train-*"))[0]))))
    seed = tf.constant([3, 4], tf.int64)

    def sample(record):
        return make_sample(schema.parse_example(record), tasks.TASKS, augment.sample_augmentation(seed), 64)

    eager_inputs, eager_targets = sample(serialized)
    graph_inputs, graph_targets = next(iter(tf.data.Dataset.from_tensors(serialized).map(sample)))
    np.testing.assert_allclose(eager_inputs["image"], graph_inputs["image"], atol=1e-5)
    for name in tasks.TASKS:
        np.testing.assert_allclose(eager_targets[name], graph_targets[name], atol=1e-6)


def test_deterministic_option_reproduces_order_and_augmentation(records_dir):
    def first_batches(seed):
        dataset = make_dataset(str(records_dir / "train-*"), "pose2d", True, 3, 64, deterministic=True, seed=seed)
        return [inputs["image"].numpy() for inputs, _ in dataset.take(3)]

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_a_corrupt_record_names_its_file(records_dir, tmp_path):
    good = sorted(records_dir.glob("train-*"))[0]
    broken = tmp_path / "train-00000-of-00001.tfrecord"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    dataset = make_dataset(str(tmp_path / "train-*"), "pose2d", training=False, batch_size=2)
    with pytest.raises(CorruptRecordError, match=str(broken)):
        with naming_corrupt_files(str(tmp_path / "train-*")):
            for _ in dataset:
                pass


def test_no_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TFRecord shards"):
        make_dataset(str(tmp_path / "*.tfrecord"), "pose2d", training=True, batch_size=1)
    with pytest.raises(ValueError, match="subset"):
        tasks.parse_tasks("pose2d,normals")


def test_shards_without_one_example_are_an_error_not_an_endless_wait(tmp_path):
    """Every clip of a split failed conversion: its shard exists and is empty. Training repeats its data forever and
    would wait for a first batch that never comes; an evaluation would have no frames to average."""
    empty = tmp_path / "train-00000-of-00001.tfrecord"
    empty.write_bytes(b"")
    for call in (lambda: make_dataset(str(empty), "pose2d", training=True, batch_size=1),
                 lambda: evaluate(lambda images: {}, str(empty), ["pose2d"], input_size=64)):  # fmt: skip
        with pytest.raises(FileNotFoundError, match=r"train-00000-of-00001.tfrecord: 1 shard\(s\) without one example"):
            call()


def test_part_of_a_shard_set_is_an_error_naming_what_is_missing(tmp_path):
    """A conversion still running (or one of its array tasks failed) leaves some of `<split>-*-of-N`: reading them
    would train or evaluate on a fraction of the data without a word."""
    for index in (0, 2, 4):
        (tmp_path / f"train-{index:05d}-of-00005.tfrecord").write_bytes(b"")
    (tmp_path / "val-00000-of-00001.tfrecord").write_bytes(b"")
    message = r"train-\*-of-00005.tfrecord: 3 of 5 shards \(missing train-00001-of-00005, train-00003-of-00005\)"
    with pytest.raises(FileNotFoundError, match=message):
        make_dataset(str(tmp_path / "train-*.tfrecord"), "pose2d", training=True, batch_size=1)
    make_dataset(str(tmp_path / "val-*.tfrecord"), "pose2d", training=False, batch_size=1)  # a whole set is read
    (tmp_path / "mine.tfrecord").write_bytes(b"")  # files not named as shards are the user's own: not checked
    make_dataset(str(tmp_path / "mine.tfrecord"), "pose2d", training=False, batch_size=1)


def test_a_run_reads_the_share_of_every_shard_its_draws_need(records_dir, tmp_path):
    """18 training frames in 2 shards (clips 0 and 2: 12 frames; clip 1: 6); a run drawing 6 records reads the first
    third of each shard, 2 random frames of each of the 3 clips, and then those again: a share of every clip, where
    whole shards read one after another would spend a short run on a few clips (SURREAL: ~3,000 of 55,001 clips in
    the paper's run)."""
    files = sorted(map(str, records_dir.glob("train-*.tfrecord")))
    assert records_to_read(files, 6) == [4, 2]
    assert records_to_read(files, None) == records_to_read(files, 18) == [-1, -1], "all of every shard"
    dataset = make_dataset(str(records_dir / "train-*"), "depth", training=True, batch_size=6, input_size=64,
                           deterministic=True, with_metadata=True, records_drawn=6)  # fmt: skip
    read = {(clip, frame) for inputs, _ in dataset.take(10)
            for clip, frame in zip(inputs["clip"].numpy(), inputs["frame"].numpy(), strict=True)}  # fmt: skip
    assert sorted(collections.Counter(clip for clip, _ in read).values()) == [2, 2, 2], read
    # A shard without data_prep.surreal's record of it (copied from elsewhere) is read whole; the others share.
    shutil.copy(files[1], tmp_path / "extra-00000-of-00001.tfrecord")
    assert records_to_read([*files, str(tmp_path / "extra-00000-of-00001.tfrecord")], 6) == [4, 2, -1]


def test_shards_at_a_url_are_read_as_their_share_too(records_dir):
    """Shards in a bucket (gs://..., here TensorFlow's in-memory ram:// file system): the converter's records beside
    them are read with tf.io.gfile, so a run there also reads a share of every shard (with open() they were missing,
    and each shard was read whole) and the clip-coverage note finds the manifest."""
    bucket = f"ram://{records_dir.name}"
    for local in records_dir.rglob("*"):
        if local.is_file():
            tf.io.gfile.makedirs(os.path.dirname(f"{bucket}/{local.relative_to(records_dir)}"))
            tf.io.gfile.copy(str(local), f"{bucket}/{local.relative_to(records_dir)}", overwrite=True)
    files = sorted(tf.io.gfile.glob(f"{bucket}/train-*.tfrecord"))
    assert len(files) == 2 and records_to_read(files, 6) == [4, 2]
    assert converted_frames(bucket, "train") == converted_frames(str(records_dir), "train") == (18, 1)
    dataset = make_dataset(f"{bucket}/train-*", "depth", training=True, batch_size=6, input_size=64,
                           with_metadata=True, records_drawn=6)  # fmt: skip
    read = {(clip, frame) for inputs, _ in dataset.take(10)
            for clip, frame in zip(inputs["clip"].numpy(), inputs["frame"].numpy(), strict=True)}  # fmt: skip
    assert sorted(collections.Counter(clip for clip, _ in read).values()) == [2, 2, 2], read


def test_a_resumed_run_draws_on_where_the_killed_one_stopped(records_dir):
    """A run resumed after its 2nd epoch draws the crops an uninterrupted run draws in its 3rd and 4th (the records and
    their augmentation), not the 1st epoch's again: killed every epoch, it drew the same first crops each time."""
    config = config_lib.make_config("tiny", data_dir=str(records_dir), epochs=4, steps_per_epoch=1, batch_size=4)
    in_order = tf.data.Options()
    in_order.deterministic = True  # the parallel map may otherwise swap two crops across an epoch's end

    def crops(initial_epoch):
        dataset = training_data.training_dataset(config, str(records_dir / "train-*"), initial_epoch).with_options(
            in_order
        )
        batches = dataset.take((config.epochs - initial_epoch) * config.steps_per_epoch)
        return np.concatenate([inputs["image"].numpy() for inputs, _ in batches])

    uninterrupted = crops(0)
    np.testing.assert_array_equal(crops(2), uninterrupted[8:])
    assert not np.array_equal(uninterrupted[:8], uninterrupted[8:]), "the first epochs' crops again"
