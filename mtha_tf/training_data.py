"""What a training run reads: the shards (given, or the embedded data generated into the work dir), the batches it
draws from them, and whether they cover the training clips."""

import json
import math
import os

import tensorflow as tf

from mtha_tf import atomic_files, losses
from mtha_tf.data.pipeline import make_dataset, require_examples, shards_digest
from mtha_tf.data.shards import converted_frames, interleaved


def data_patterns(config, workdir):
    """(train, held-out) shard patterns: `config.data_dir`, or the embedded synthetic data cached in the work dir."""
    if config.data_dir:
        return os.path.join(config.data_dir, "train-*.tfrecord"), os.path.join(config.data_dir, "val-*.tfrecord")
    from data_prep import embedded

    return embedded.prepare(
        os.path.join(workdir, "data"),
        config.synthetic_train_clips,
        config.synthetic_val_clips,
        config.synthetic_frames,
        config.frame_stride,
        seed=config.seed,
    )


def check_data_dir(config):
    """FileNotFoundError naming `--data_dir` when it lacks the train or the val split, or holds part of a shard set."""
    if not config.data_dir:
        return
    for pattern in data_patterns(config, workdir=None):
        if not tf.io.gfile.glob(pattern):  # e.g. converted with --splits=train: the val split is needed too
            raise FileNotFoundError(
                f"--data_dir={config.data_dir}: no TFRecord shards match {pattern!r}; training reads the train split "
                "and evaluates every epoch on the val split (python -m data_prep.surreal --splits=train,val writes "
                "both)"
            )
        require_examples(pattern)  # and not a partial set of shards


def shards_record_path(workdir):
    """`workdir/shards.json`: the names and sizes of the shards a run on `--data_dir` trains and evaluates on."""
    return os.path.join(workdir, "shards.json")


def _shards_of(data_dir):
    """{split: `shards_digest`} of a data dir's train and val shards."""
    return {split: shards_digest(os.path.join(data_dir, f"{split}-*.tfrecord")) for split in ("train", "val")}


def _recorded_shards(workdir):
    try:
        with open(shards_record_path(workdir)) as f:
            return json.load(f)
    except (OSError, ValueError):  # none (a new run, one from before the record), or damaged
        return None


def record_shards(config, workdir):
    """Writes `shards_record_path(workdir)` for a run on `config.data_dir` (the embedded data lies in the work dir);
    returns a note when the record it replaces was of other shards, else "": the data dir was converted again since
    the run started, and its finished epochs were on other data."""
    if not config.data_dir:
        return ""
    before, now = _recorded_shards(workdir), _shards_of(config.data_dir)
    atomic_files.write_json(shards_record_path(workdir), now)
    if before in (None, now):
        return ""
    return (f"note: {config.data_dir} holds other shards than this run recorded in {shards_record_path(workdir)} "
            "(names or sizes; converted again?): it trains on with them, its finished epochs were on the earlier "
            "ones")  # fmt: skip


def same_shards(workdir, data_dir, recorded_data_dir):
    """Whether `data_dir` holds the shards the run in `workdir` recorded at `recorded_data_dir` (its config.json's),
    by their names and sizes: the run's data moved, copied or mounted elsewhere (a study dir copied from a cluster, a
    node that mounts the data at another path) is the same run's data, not another run's. A run from before
    shards.json is compared with the shards still at `recorded_data_dir`, if any."""
    if not (recorded_data_dir and data_dir):
        return False
    try:
        return (_recorded_shards(workdir) or _shards_of(recorded_data_dir)) == _shards_of(data_dir)
    except FileNotFoundError:  # no shards, or part of a set, at either place
        return False


def drawn_records(config):
    """The training records a run draws in all (every epoch, every step, the global batch)."""
    return config.epochs * config.steps_per_epoch * config.batch_size


def training_dataset(config, pattern, initial_epoch=0):
    """The batches a run trains on once `initial_epoch` epochs are done, each target once per stack's output. A resumed
    run draws on after the records of its finished epochs, as an uninterrupted run would: it used to start the stream
    again, drawing the first epochs' crops once more, and a run killed every epoch (a preemptible job) drew the same
    first tenth of its read plan ten times over (BUILD.md, Training)."""
    task_names = config.task_names()
    dataset = make_dataset(pattern, task_names, training=True, batch_size=config.batch_size,
                           input_size=config.input_size, seed=config.seed, records_drawn=drawn_records(config),
                           records_skipped=initial_epoch * config.steps_per_epoch * config.batch_size)  # fmt: skip
    dataset = dataset.map(losses.targets_per_output(task_names, config.num_stacks))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def clip_coverage_note(config):
    """A note when a run on shards that hold each clip's frames in a row (converted before data_prep.surreal
    interleaved them) reads under half of their training frames, else "": tf.data reads such shards record after
    record, so the run sees about that share of the clips too (a paper run on SURREAL converted at every frame: 300k
    crops of 5.5 M frames, ~3,000 of 55,001 clips; BUILD.md), where SURREAL's reference loader draws a random clip
    and frame for every crop."""
    converted = converted_frames(config.data_dir, "train") if config.data_dir else None
    crops = drawn_records(config)
    if not converted or 2 * crops > converted[0]:
        return ""
    if interleaved(tf.io.gfile.glob(os.path.join(config.data_dir, "train-*.tfrecord"))):
        return ""  # the run reads a share of each shard, from every clip
    frames, stride = converted
    return (f"note: this run trains on {crops:,} crops and {config.data_dir} holds {frames:,} training frames, each "
            f"clip's in a row (converted before data_prep.surreal interleaved a shard's clips): it reads "
            f"{crops / frames:.0%} of the frames and about that share of the clips. Converting again, or with "
            f"--frame_stride={stride * math.ceil(frames / crops)}, spreads it over every clip (BUILD.md, Converting "
            "SURREAL at scale)")  # fmt: skip
