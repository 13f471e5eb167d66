"""Shard file names: `<split>-<index>-of-<count>.tfrecord`, written by `data_prep.surreal`, checked by the reader;
and what the reader takes from the converter's records beside them (`manifest.json`, `conversion.json`,
`parts/<shard>.json`): frame counts, and whether a shard interleaves its clips.

The count in every name lets a reader tell a complete set from part of one. Plain Python: the converter's parent
process plans shards before its workers start TensorFlow; only the records of shards at a URL (gs://...) are read
through TensorFlow's file systems.
"""

import collections
import concurrent.futures
import json
import math
import os
import re

_SHARD_NAME = re.compile(r"^(?P<set>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def shard_name(split, index, count):
    """The file name (without `.tfrecord`) of shard `index` of `count` of a split."""
    return f"{split}-{index:05d}-of-{count:05d}"


def missing_shards(paths):
    """The shard names absent from sets of which `paths` hold only part (a conversion still running, or a task of
    it that failed), as `[(set pattern, found, count, [missing names])]`; files not named as shards are ignored."""
    sets = collections.defaultdict(set)
    for path in paths:
        if match := _SHARD_NAME.match(os.path.basename(path)):
            sets[(os.path.dirname(path), match["set"], int(match["count"]))].add(int(match["index"]))
    incomplete = []
    for (folder, split, count), found in sorted(sets.items()):
        if len(found) < count:
            absent = [shard_name(split, i, count) for i in range(count) if i not in found]
            incomplete.append((os.path.join(folder, f"{split}-*-of-{count:05d}.tfrecord"), len(found), count, absent))
    return incomplete


def _read_json(path):
    """A JSON file's content; OSError if it cannot be read, ValueError if it is not JSON. A URL (gs://..., a training
    run's shards in a bucket) is read with tf.io.gfile."""
    if "://" not in path:
        with open(path) as f:
            return json.load(f)
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path) as f:
            return json.loads(f.read())
    except tf.errors.OpError as error:
        raise OSError(f"{path}: {error.message}") from None


def converted_frames(data_dir, split):
    """(frames of `split` written, the conversion's --frame_stride) by the `manifest.json` and `conversion.json` that
    data_prep.surreal leaves in `data_dir`; None where they are absent or unreadable (shards from elsewhere)."""
    try:
        frames = _read_json(os.path.join(data_dir, "manifest.json"))["splits"][split]["frames_written"]
        return frames, _read_json(os.path.join(data_dir, "conversion.json"))["frame_stride"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _shard_record(path):
    """The `parts/<shard>.json` that data_prep.surreal writes beside a shard, or None (shards from elsewhere)."""
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        return _read_json(os.path.join(os.path.dirname(path), "parts", name + ".json"))
    except (OSError, ValueError):
        return None


def map_paths(function, paths):
    """[function(path) for path in paths], 32 at a time where they are URLs: a bucket answers each read or stat after
    a round trip, and SURREAL's training split has ~1,100 shards."""
    if not any("://" in path for path in paths):
        return [function(path) for path in paths]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        return list(pool.map(function, paths))


def _interleaved_counts(paths):
    """`_interleaved_frames` of each shard's record."""
    return [_interleaved_frames(record) for record in map_paths(_shard_record, paths)]


def _interleaved_frames(record):
    """A shard record's frame count if data_prep.surreal interleaved the shard's clips, else None."""
    return record["frames_written"] if record and record.get("interleaved") else None


def interleaved(paths):
    """Whether data_prep.surreal interleaved the clips of every one of these shards (see `records_to_read`)."""
    return all(count is not None for count in _interleaved_counts(paths))


def records_to_read(paths, total):
    """How many of its first records each shard gives a run that draws `total` records (None: all of them), -1 for
    all. A shard whose frames data_prep.surreal interleaved across its clips gives the same share as every other such
    shard, `total` / their frames (at most all): its first records hold random frames of every clip, so the run draws
    on every clip of the split, as SURREAL's reference loader, which picks a random clip and frame per crop. Other
    shards hold each clip's frames in a row and are read whole."""
    if total is None:
        return [-1] * len(paths)
    counts = _interleaved_counts(paths)
    frames = sum(n for n in counts if n is not None)
    if total >= frames:
        return [-1] * len(paths)
    return [-1 if n is None else math.ceil(n * total / frames) for n in counts]
