"""The embedded default data: synthetic SURREAL-format clips, generated once, converted to TFRecords, cached."""

import contextlib
import os

from data_prep import surreal as converter
from data_prep import synthetic
from mtha_tf import file_locks

# A spawned worker takes a few seconds to start (a fresh interpreter; the converter's imports TensorFlow), the time
# to render and convert a few hundred frames: smaller data (the tiny preset, tests) is made in this process.
FRAMES_WORTH_A_WORKER = 200


def prepare(root, train_clips, val_clips, num_frames, frame_stride, seed=0, num_workers=None):
    """Generates and converts what is missing under `root`; returns (train shard pattern, val shard pattern).

    Clips already on disk and shards already converted are kept, so a second call costs nothing. Training and
    held-out clips come from different seeds (different people, motions, backgrounds and cameras).
    """
    with _prepared_alone(root):
        return _prepare(root, train_clips, val_clips, num_frames, frame_stride, seed, num_workers)


@contextlib.contextmanager
def _prepared_alone(root):
    """Holds `root` while this process prepares it (an exclusive flock on `root/.prepare.lock`): processes started at
    once on one study dir (the four targets' studies, one per GPU) would write the same temporary files; the later
    ones wait, then find everything made. Without fcntl or file locks, unheld."""
    os.makedirs(root, exist_ok=True)
    note = f"note: another process is preparing the embedded data in {root}; waiting for it"
    with file_locks.flocked(os.path.join(root, ".prepare.lock"), waiting_note=note):
        yield


def _prepare(root, train_clips, val_clips, num_frames, frame_stride, seed, num_workers):
    num_workers = num_workers or os.cpu_count() or 1
    if (train_clips + val_clips) * num_frames < FRAMES_WORTH_A_WORKER:
        num_workers = 1
    clips_dir, records_dir = os.path.join(root, "surreal"), os.path.join(root, "records")
    synthetic.generate(clips_dir, train_clips, num_frames, seed, "train", num_workers)
    synthetic.generate(clips_dir, val_clips, num_frames, seed + 1000, "val", num_workers)
    try:
        manifest, _ = converter.convert(
            clips_dir,
            records_dir,
            ["train", "val"],
            frame_stride=frame_stride,
            num_workers=num_workers,
            clips_per_shard=max(1, train_clips // 8),
            progress=False,
        )
    except converter.OtherConversion as error:  # a study dir reused with another preset's amount of data
        raise converter.OtherConversion(
            f"the embedded data under {root} is of other settings ({error}); use a new study dir for these settings"
        ) from None
    failed = {name: why for split in manifest["splits"].values() for name, why in split["failed"].items()}
    if failed or not manifest["complete"]:
        raise RuntimeError(f"converting the embedded data under {root} failed: {failed}")
    return os.path.join(records_dir, "train-*.tfrecord"), os.path.join(records_dir, "val-*.tfrecord")
