"""Shared test fixtures (the real SURREAL files in ../shared/fixtures, a synthetic SURREAL tree) and model batches."""

import contextlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


def random_batch(task_names, size, batch=2, seed=0):
    """Model inputs and per-task targets for tests: random images, blocky label maps, one peak per heatmap channel."""
    rng = np.random.default_rng(seed)
    grid = size // 4
    images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    blocks = np.add.outer(np.arange(grid) // 4, np.arange(grid) // 4)
    peaks = np.zeros((batch, grid, grid, 304), np.float32)
    peaks[:, rng.integers(0, grid, 304), rng.integers(0, grid, 304), np.arange(304)] = 1.0
    targets = {
        "pose2d": peaks[..., :16],
        "segmentation": np.broadcast_to(blocks % 15, (batch, grid, grid)).astype(np.int32),
        "depth": np.broadcast_to(blocks % 20, (batch, grid, grid)).astype(np.int32),
        "pose3d": peaks,
    }
    return {"image": images}, {t: targets[t] for t in task_names}


@contextlib.contextmanager
def held_by_another_process(lock, then):
    """Runs `with <lock>:` in another Python process (a study or job beside this one), which sleeps 1.5 s inside it and
    then runs `then`, still holding it; the block runs once the other process holds it."""
    code = "import shutil, time\nfrom data_prep import embedded\nfrom mtha_tf import file_locks, trainer\n"
    code += f"with {lock}:\n    print('held', flush=True)\n    time.sleep(1.5)\n    {then}\n"
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="session")
def real_fixtures():
    """../shared/fixtures (licence-bound: read in place, never copied). Missing in CI is a failure, not a skip."""
    if not SHARED_FIXTURES.is_dir():
        message = f"real fixtures not found at {SHARED_FIXTURES} (clone next to shared/)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Three 6-frame training clips and one validation clip in SURREAL's layout."""
    from data_prep import synthetic

    root = tmp_path_factory.mktemp("surreal")
    synthetic.generate(str(root), num_clips=3, num_frames=6, seed=7, split="train")
    synthetic.generate(str(root), num_clips=1, num_frames=6, seed=7, split="val")
    return root


@pytest.fixture(scope="session")
def records_dir(synthetic_root, tmp_path_factory):
    """`synthetic_root` converted to TFRecords (train: 18 frames in 2 shards, val: 6 frames)."""
    from data_prep import surreal as converter

    out = tmp_path_factory.mktemp("records")
    converter.convert(str(synthetic_root), str(out), ["train", "val"], clips_per_shard=2, progress=False)
    return out
