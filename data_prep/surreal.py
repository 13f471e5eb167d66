r"""SURREAL clips -> sharded TFRecords plus a manifest.

    python -m data_prep.surreal --input_dir=ROOT --output_dir=OUT [--splits=train,val,test] [--frame_stride=K]
        [--num_workers=P] [--clips_per_shard=N] [--task_index=I --num_tasks=M]

ROOT holds `cmu/`. Each split's clips (sorted) are dealt round-robin into shards `OUT/<split>-%05d-of-%05d.tfrecord`,
so every shard mixes sequences, and a shard interleaves its clips' frames, each clip's in a random order: its first
records hold a few random frames of every clip, so a training run that reads a share of each shard sees every clip.
A shard is written under a temporary name and renamed when complete, with a small `OUT/parts/<shard>.json` recording
its clips; a restarted run skips shards that are done, and `--task_index` / `--num_tasks` split the shards across the
machines of a job array. `OUT/manifest.json` merges every finished shard's record: per split the clips converted,
frames written and skipped, and the clips that failed with the reason.
The exit status is non-zero if any clip failed.
"""

import contextlib
import json
import math
import multiprocessing
import os
import sys
import time
import zlib

import numpy as np
from absl import app, flags

from data_prep import surreal_clip
from mtha_tf import atomic_files, surreal
from mtha_tf.data.shards import shard_name

_PARTS_DIR = "parts"
_SETTINGS_FILE = "conversion.json"  # what the shards were made with; a restart must make the same ones


class OtherConversion(ValueError):
    """The output dir holds shards made with other settings or from other clips; the message names the difference."""


def plan_shards(input_dir, splits, clips_per_shard):
    """[(split, shard name, [Clip])] for every shard of every split, in a fixed order."""
    shards = []
    for split in splits:
        clips = surreal_clip.find_clips(input_dir, split)
        num_shards = max(1, math.ceil(len(clips) / clips_per_shard)) if clips else 0
        for index in range(num_shards):
            shards.append((split, shard_name(split, index, num_shards), clips[index::num_shards]))
    return shards


def convert_shard(job):
    """Converts one shard's clips; returns its record (also written to parts/<shard>.json)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # in the worker: keeps the parent free of TF state before it forks/spawns

    from data_prep.convert_clip import clip_examples

    output_dir, split, shard, clips, frame_stride = job
    record = {"split": split, "shard": shard, "clips": [], "failed": {}, "frames_written": 0, "frames_skipped": 0,
              "interleaved": True}  # fmt: skip
    start = time.perf_counter()
    final = os.path.join(output_dir, shard + ".tfrecord")
    clip_files = []  # one hidden file per clip, its frames in a random order, until the shard interleaves them
    try:
        for clip in clips:
            try:
                examples, skipped = clip_examples(clip, frame_stride)
            except surreal_clip.ClipError as error:
                record["failed"][clip.name] = str(error)
                print(f"error: clip {clip.name}: {error}", file=sys.stderr, flush=True)
                continue
            clip_files.append(atomic_files.partial_path(f"{final}.clip{len(clip_files)}"))
            order = np.random.default_rng(zlib.crc32(clip.name.encode())).permutation(len(examples))
            with tf.io.TFRecordWriter(clip_files[-1]) as writer:
                for index in order:
                    writer.write(examples[index])
            record["clips"].append(clip.name)
            record["frames_written"] += len(examples)
            record["frames_skipped"] += skipped
        with atomic_files.replacing(final) as partial, tf.io.TFRecordWriter(partial) as writer:
            if clip_files:  # round robin: a frame of every clip, then a second one of every clip, ...
                rounds = tf.data.Dataset.from_tensor_slices(clip_files).interleave(
                    tf.data.TFRecordDataset, cycle_length=len(clip_files), block_length=1
                )
                for example in rounds.as_numpy_iterator():
                    writer.write(example)
    finally:
        for path in clip_files:
            with contextlib.suppress(OSError):
                os.remove(path)
    record["seconds"] = time.perf_counter() - start
    atomic_files.write_json(os.path.join(output_dir, _PARTS_DIR, shard + ".json"), record)
    return record


def write_manifest(output_dir, shards):
    """Merges the records of every finished shard into manifest.json; returns the manifest."""
    manifest = {"complete": True, "splits": {}}
    for split, shard, _ in shards:
        entry = manifest["splits"].setdefault(
            split, {"shards": [], "clips": [], "failed": {}, "frames_written": 0, "frames_skipped": 0}
        )
        part = os.path.join(output_dir, _PARTS_DIR, shard + ".json")
        if not os.path.exists(part):
            manifest["complete"] = False
            continue
        with open(part) as f:
            record = json.load(f)
        entry["shards"].append(shard + ".tfrecord")
        entry["clips"].extend(record["clips"])
        entry["failed"].update(record["failed"])
        entry["frames_written"] += record["frames_written"]
        entry["frames_skipped"] += record["frames_skipped"]
    atomic_files.write_json(os.path.join(output_dir, "manifest.json"), manifest)
    return manifest


def convert(input_dir, output_dir, splits, frame_stride=1, num_workers=1, clips_per_shard=50, task_index=0,
            num_tasks=1, progress=True):  # fmt: skip
    """Converts this task's unfinished shards; returns (manifest, records of the shards converted now)."""
    if not os.path.isdir(os.path.join(input_dir, "cmu")):
        # SURREAL's download unpacks to SURREAL/data/cmu/...: the folder above the root is the likely slip.
        below = os.path.join(input_dir, "data")
        hint = f" (did you mean --input_dir={below}?)" if os.path.isdir(os.path.join(below, "cmu")) else ""
        raise FileNotFoundError(f"--input_dir={input_dir}: expected a SURREAL root holding cmu/<split>/run*/...{hint}")
    if frame_stride < 1:
        raise ValueError(f"--frame_stride must be >= 1, got {frame_stride}")
    shards = plan_shards(input_dir, splits, clips_per_shard)
    if not shards:  # a SURREAL root one level off, or splits not downloaded: nothing to convert is not a success
        raise FileNotFoundError(f"no clips under {os.path.join(input_dir, 'cmu')}/{{{','.join(splits)}}}/run*/<seq>/; "
                                "expected SURREAL's <seq>_c<NNNN>.mp4, _info.mat, _segm.mat, _depth.mat")  # fmt: skip
    atomic_files.make_folder(output_dir, "output_dir")
    _claim_output_dir(output_dir, {"frame_stride": frame_stride, "clips_per_shard": clips_per_shard}, shards)
    jobs = [
        (output_dir, split, shard, clips, frame_stride)
        for i, (split, shard, clips) in enumerate(shards)
        if i % num_tasks == task_index and not os.path.exists(os.path.join(output_dir, _PARTS_DIR, shard + ".json"))
    ]
    records = []
    bar = _progress(len(jobs), progress)
    if num_workers <= 1 or len(jobs) <= 1:
        results = map(convert_shard, jobs)
        records = _collect(results, bar)
    else:
        with multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs))) as pool:
            records = _collect(pool.imap_unordered(convert_shard, jobs), bar)
    return write_manifest(output_dir, shards), records


def _claim_output_dir(output_dir, settings, shards):
    """Records `settings` in OUT/conversion.json, or checks them against the recorded ones, and checks that the
    finished shards of the splits converted now are of this plan. Finished shards are skipped by name, so a restart
    with another stride would mix two samplings in a split, and one with another --clips_per_shard or more clips
    under --input_dir would add a second set of shards (`-of-<another count>`) holding the same clips again."""
    path = os.path.join(output_dir, _SETTINGS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        if differences := [f"--{name}={recorded.get(name)} (asked: {value})" for name, value in settings.items()
                           if recorded.get(name) != value]:  # fmt: skip
            raise OtherConversion(f"{output_dir} holds shards converted with {', '.join(differences)}; use another "
                             "--output_dir, or the same settings to resume")  # fmt: skip
    parts_dir = os.path.join(output_dir, _PARTS_DIR)
    planned = {shard for _, shard, _ in shards}
    splits = {split for split, _, _ in shards}
    finished = [name[: -len(".json")] for name in os.listdir(parts_dir)] if os.path.isdir(parts_dir) else []
    if stale := sorted(name for name in finished if name.split("-")[0] in splits and name not in planned):
        shown = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
        raise OtherConversion(f"{output_dir} holds shards of another plan ({shown}): the clips under "
                         "--input_dir changed since they were converted; use another --output_dir")  # fmt: skip
    os.makedirs(parts_dir, exist_ok=True)
    atomic_files.write_json(path, settings)  # every task of a job array writes the same


def _progress(total, enabled):
    from tqdm import tqdm

    return tqdm(total=total, unit="shard", disable=not enabled, file=sys.stderr)


def _collect(results, bar):
    records = []
    frames = 0
    for record in results:
        records.append(record)
        frames += record["frames_written"]
        bar.update(1)
        bar.set_postfix(frames=frames, failed=sum(len(r["failed"]) for r in records))
    bar.close()
    return records


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags; defined only when run as a program, so importing the module stays side-effect free."""
    flags.DEFINE_string("input_dir", None, "SURREAL root (holds cmu/).", required=True)
    flags.DEFINE_string("output_dir", None, "Where shards and manifest.json go.", required=True)
    flags.DEFINE_list("splits", list(surreal.SPLITS), "Splits to convert.")
    flags.register_validator("splits", lambda v: bool(v) and set(v) <= set(surreal.SPLITS),
                             "expected a comma-separated subset of SURREAL's splits: train,val,test")  # fmt: skip
    flags.DEFINE_integer("frame_stride", 1, "Keep frames t with t % frame_stride == 0.", lower_bound=1)
    flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Parallel processes.", lower_bound=1)
    flags.DEFINE_integer("clips_per_shard", 50, "Clips per shard (about 5000 frames at stride 1).", lower_bound=1)
    flags.DEFINE_integer("task_index", 0, "This machine's index in a job array.", lower_bound=0)
    flags.DEFINE_integer("num_tasks", 1, "Machines in the job array.", lower_bound=1)
    flags.register_multi_flags_validator(["task_index", "num_tasks"], lambda v: v["task_index"] < v["num_tasks"],
                                         "--task_index must be below --num_tasks")  # fmt: skip


def main(argv):
    del argv
    start = time.perf_counter()
    try:
        manifest, records = convert(
            FLAGS.input_dir,
            FLAGS.output_dir,
            FLAGS.splits,
            frame_stride=FLAGS.frame_stride,
            num_workers=FLAGS.num_workers,
            clips_per_shard=FLAGS.clips_per_shard,
            task_index=FLAGS.task_index,
            num_tasks=FLAGS.num_tasks,
        )
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:  # no SURREAL root; an output dir that
        # cannot be a folder or holds other settings
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    for split in FLAGS.splits:
        if split not in manifest["splits"]:
            print(f"warning: no {split} clips under {FLAGS.input_dir}/cmu/{split}/", file=sys.stderr)
    frames = sum(r["frames_written"] for r in records)
    busy = sum(r["seconds"] for r in records)
    failed = {name: why for r in records for name, why in r["failed"].items()}
    print(f"wrote {frames} frames from {sum(len(r['clips']) for r in records)} clips in {len(records)} shards "
          f"in {seconds:.1f} s: {frames / max(seconds, 1e-9):.1f} frames/s, "
          f"{frames / max(busy, 1e-9):.1f} frames/s per process; {len(failed)} clips failed; "
          f"manifest complete: {manifest['complete']}", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
