"""Shared test fixtures: the real SURREAL files in ../shared/fixtures and a small synthetic SURREAL tree."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


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
