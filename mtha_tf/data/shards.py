"""Shard file names: `<split>-<index>-of-<count>.tfrecord`, written by `data_prep.surreal`, checked by the reader.

The count in every name lets a reader tell a complete set from part of one. Plain Python (no TensorFlow): the
converter's parent process plans shards before its workers start TensorFlow.
"""

import collections
import json
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


def converted_frames(data_dir, split):
    """(frames of `split` written, the conversion's --frame_stride) by the `manifest.json` and `conversion.json` that
    data_prep.surreal leaves in `data_dir`; None where they are absent or unreadable (shards from elsewhere, a URL)."""
    try:
        with open(os.path.join(data_dir, "manifest.json")) as f:
            frames = json.load(f)["splits"][split]["frames_written"]
        with open(os.path.join(data_dir, "conversion.json")) as f:
            return frames, json.load(f)["frame_stride"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
