"""TFRecord shards -> batched (inputs, targets) for any subset of the four tasks, entirely in the TF graph."""

import contextlib
import hashlib
import os

import tensorflow as tf

from mtha_tf import tasks
from mtha_tf.data import augment, schema
from mtha_tf.data.sample import make_sample
from mtha_tf.data.shards import map_paths, missing_shards, records_to_read


class CorruptRecordError(ValueError):
    """A shard holds a record that cannot be read or parsed; the message names the file and the record."""


def list_files(file_pattern):
    """Sorted shard paths matching a glob (or a list of globs); an error if none match."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {file_pattern!r}")
    # Part of a set (data_prep.surreal still converting, or one of its tasks failed) would train or evaluate on a
    # fraction of the data without a word.
    if incomplete := missing_shards(files):
        pattern, found, count, absent = incomplete[0]
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise FileNotFoundError(f"{pattern}: {found} of {count} shards (missing {shown}); is the conversion still "
                                "running, or did a task of it fail? Its manifest.json says complete: true when "
                                "every shard is written")  # fmt: skip
    return files


def shards_digest(file_pattern):
    """sha256 of the names and byte sizes of the shards `list_files(file_pattern)` finds: what identifies converted
    data wherever it lies (copied, moved, or mounted at another path), without reading it."""
    files = list_files(file_pattern)
    digest = hashlib.sha256()
    for path, size in zip(files, map_paths(lambda path: tf.io.gfile.stat(path).length, files), strict=True):
        digest.update(f"{os.path.basename(path)} {size}\n".encode())
    return digest.hexdigest()


def require_examples(file_pattern):
    """`list_files(file_pattern)`, and FileNotFoundError if those shards hold not one example (every clip of the split
    failed conversion, or every frame was skipped)."""
    files = list_files(file_pattern)
    if not any(True for _ in tf.data.TFRecordDataset(files).take(1)):
        raise FileNotFoundError(f"{file_pattern}: {len(files)} shard(s) without one example; data_prep.surreal's "
                                "manifest.json lists the clips that failed and the frames skipped")  # fmt: skip
    return files


def make_dataset(file_pattern, tasks_to_train, training, batch_size, input_size=256, shuffle_buffer=256,
                 deterministic=False, seed=0, repeat=None, with_metadata=None, drop_remainder=None,
                 frame_stride=1, records_drawn=None, records_skipped=0):  # fmt: skip
    """A `tf.data.Dataset` of (inputs, targets) batches.

    inputs["image"] float32 [B, S, S, 3] (S = input_size, SURREAL-whitened); targets keyed by task name, only the
    requested ones, at S / 4: pose2d float32 [B, S/4, S/4, 16], segmentation int32 [B, S/4, S/4] (0..14), depth int32
    (0..19), pose3d float32 [B, S/4, S/4, 304]. `training` turns on shuffling across shards and augmentation and
    repeats forever; otherwise records are read in order once, and (by default) inputs also carry the metadata that
    metrics need (see `sample.make_sample`). `deterministic` fixes the order and the augmentation for a seed.
    `frame_stride` keeps the frames whose index in their clip is a multiple of it. `records_drawn`, the records a
    training run will draw in all, has it read that share of each shard converted by data_prep.surreal (which
    interleaves a shard's clips), so that it sees every clip (`shards.records_to_read`); None reads every record.
    `records_skipped`, the records a resumed training run drew before, continues the stream (records and augmentation)
    after them rather than starting it again: the shards' order, the shuffles and the augmentation seeds depend on the
    seed alone, so a run killed and resumed draws what an uninterrupted one would.
    Wrap iteration in `naming_corrupt_files(file_pattern)` to get errors that name the broken shard.
    """
    task_names = tasks.parse_tasks(tasks_to_train)
    repeat = training if repeat is None else repeat
    # Repeating shards without one example would wait for the first batch forever.
    files = require_examples(file_pattern) if repeat else list_files(file_pattern)
    with_metadata = (not training) if with_metadata is None else with_metadata
    drop_remainder = training if drop_remainder is None else drop_remainder
    options = tf.data.Options()
    options.deterministic = deterministic or not training

    counts = tf.constant(records_to_read(files, records_drawn), tf.int64)  # -1: the whole shard
    dataset = tf.data.Dataset.from_tensor_slices((files, counts))
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.interleave(
        lambda path, count: tf.data.TFRecordDataset(path).take(count),
        cycle_length=min(len(files), 8) if training else 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # the records' order depends on the seed alone, so `records_skipped` skips the drawn ones
    )
    if frame_stride > 1:
        dataset = dataset.filter(lambda serialized: schema.frame_index(serialized) % frame_stride == 0)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    if records_skipped:  # serialized records: skipped unparsed, only read from disk again
        dataset, seeds = dataset.skip(records_skipped), seeds.skip(records_skipped)

    def to_sample(serialized, example_seed):
        augmentation = augment.sample_augmentation(example_seed) if training else augment.no_augmentation()
        return make_sample(schema.parse_example(serialized), task_names, augmentation, input_size, with_metadata)

    dataset = tf.data.Dataset.zip((dataset, seeds)).map(to_sample, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def find_corrupt_record(files):
    """(file, record index, reason) for the first record in `files` that cannot be read or parsed, else None."""
    for path in files:
        index = 0
        try:
            for index, serialized in enumerate(tf.data.TFRecordDataset(path)):  # noqa: B007
                schema.parse_example(serialized)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            return path, index, error.message.split("\n")[0]
    return None


@contextlib.contextmanager
def naming_corrupt_files(file_pattern):
    """Turns tf.data's anonymous "corrupted record" errors into a `CorruptRecordError` naming the shard."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        found = find_corrupt_record(list_files(file_pattern))
        if found is None:
            raise
        path, index, reason = found
        raise CorruptRecordError(f"{path}: record {index} is corrupt or not a SURREAL frame ({reason})") from error
