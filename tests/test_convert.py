"""SURREAL -> TFRecord: round trip through `parse_example`, real `_info.mat` files, sharding, resume, bad input."""

import glob
import json
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from data_prep import embedded, synthetic
from data_prep import surreal as converter
from mtha_tf import atomic_files, surreal
from mtha_tf.data.schema import parse_example
from tests.conftest import REPO, held_by_another_process


def _records(output_dir, split):
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*.tfrecord"))
    return [{k: v.numpy() for k, v in parse_example(r).items()} for r in tf.data.TFRecordDataset(files)]


def _video_frames(path):
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame[..., ::-1])


def test_generator_converter_parse_round_trip(synthetic_root, tmp_path):
    manifest, _ = converter.convert(str(synthetic_root), str(tmp_path), ["train", "val"], frame_stride=2,
                                    clips_per_shard=2, progress=False)  # fmt: skip
    assert manifest["complete"]
    assert manifest["splits"]["train"]["frames_written"] == 9 and manifest["splits"]["val"]["frames_written"] == 3
    assert sorted(p.name for p in tmp_path.glob("train-*")) == ["train-00000-of-00002.tfrecord",
                                                                "train-00001-of-00002.tfrecord"]  # fmt: skip
    records = _records(tmp_path, "train")
    assert sorted(r["frame"] for r in records) == [0, 0, 0, 2, 2, 2, 4, 4, 4]
    for record in records:
        base = synthetic_root / "cmu" / record["clip"].decode()
        t = record["frame"]
        info = scipy.io.loadmat(f"{base}_info.mat")
        segm = scipy.io.loadmat(f"{base}_segm.mat")[f"segm_{t + 1}"]
        depth = scipy.io.loadmat(f"{base}_depth.mat")[f"depth_{t + 1}"]
        assert record["image"].shape == (240, 320, 3) and record["image"].dtype == np.uint8
        np.testing.assert_array_equal(record["image"], _video_frames(f"{base}.mp4")[t])
        np.testing.assert_array_equal(record["segmentation"], segm)
        np.testing.assert_array_equal(record["depth"], np.where(depth > 1e3, 0, depth))
        np.testing.assert_array_equal(record["joints2d"], info["joints2D"][:, surreal.JOINTS_IX, t].T)
        expected = surreal.world_to_camera(info["joints3D"][:, surreal.JOINTS_IX, t].T, info["camLoc"])
        np.testing.assert_allclose(record["joints3d"], expected, atol=1e-5)
        np.testing.assert_allclose(record["intrinsics"], surreal.INTRINSICS)
        np.testing.assert_allclose(record["joints3d_smpl"][surreal.JOINTS_IX], record["joints3d"])


def _clip_around_real_info(real_fixtures, root, name, num_frames=100):
    """A clip with a real `_info.mat` and placeholder video/segmentation/depth of the right size."""
    seq = name[:5]
    base = root / "cmu" / "val" / "run0" / seq / name
    base.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(real_fixtures / "surreal" / f"{name}_info.mat", f"{base}_info.mat")
    synthetic.write_mp4(f"{base}.mp4", np.zeros((num_frames, 240, 320, 3), np.uint8))
    blank = np.zeros((240, 320), np.uint8)
    scipy.io.savemat(f"{base}_segm.mat", {f"segm_{t + 1}": blank for t in range(num_frames)}, do_compression=True)
    far = np.full((240, 320), 1e10, np.float32)
    scipy.io.savemat(f"{base}_depth.mat", {f"depth_{t + 1}": far for t in range(num_frames)}, do_compression=True)
    return base


def test_real_info_files_convert_to_camera_joints_that_reproject_exactly(real_fixtures, tmp_path):
    root = tmp_path / "surreal"
    for name in ("01_01_c0001", "40_02_c0010"):
        _clip_around_real_info(real_fixtures, root, name)
    manifest, _ = converter.convert(str(root), str(tmp_path / "out"), ["val"], frame_stride=10, progress=False)
    entry = manifest["splits"]["val"]
    assert entry["failed"] == {} and entry["frames_written"] + entry["frames_skipped"] == 20
    records = _records(tmp_path / "out", "val")
    assert len(records) == entry["frames_written"] >= 15
    for record in records:
        pixels = np.round(surreal.project(record["joints3d"].astype(np.float64)))
        np.testing.assert_array_equal(pixels, record["joints2d"])
        assert record["joints3d"][surreal.PELVIS, 2] > 4.0


def test_resume_skips_finished_shards_and_tasks_partition_the_work(synthetic_root, tmp_path):
    first, done = converter.convert(str(synthetic_root), str(tmp_path), ["train"], clips_per_shard=1,
                                    task_index=0, num_tasks=2, progress=False)  # fmt: skip
    assert not first["complete"] and [r["shard"] for r in done] == ["train-00000-of-00003", "train-00002-of-00003"]
    mtime = (tmp_path / "train-00000-of-00003.tfrecord").stat().st_mtime_ns
    leftover = atomic_files.partial_path(str(tmp_path / "train-00001-of-00003.tfrecord"))
    pathlib.Path(leftover).write_bytes(b"left by a killed run: not a TFRecord")
    # Readers see the finished shards only (the half-written one would fail to parse).
    assert len(_records(tmp_path, "train")) == sum(record["frames_written"] for record in done)
    second, done = converter.convert(str(synthetic_root), str(tmp_path), ["train"], clips_per_shard=1,
                                     task_index=1, num_tasks=2, progress=False)  # fmt: skip
    assert second["complete"] and [r["shard"] for r in done] == ["train-00001-of-00003"]
    third, done = converter.convert(str(synthetic_root), str(tmp_path), ["train"], clips_per_shard=1, progress=False)
    assert done == [] and third == second
    assert (tmp_path / "train-00000-of-00003.tfrecord").stat().st_mtime_ns == mtime
    assert not list(tmp_path.rglob("*partial*")) and len(_records(tmp_path, "train")) == 18


def test_a_restart_that_would_make_other_shards_is_refused(synthetic_root, tmp_path):
    """Finished shards are skipped by name: another stride would mix two samplings in a split, another clips per
    shard (or clips added to the input) a second set of shards with the same clips again."""
    out = tmp_path / "out"
    converter.convert(str(synthetic_root), str(out), ["train"], clips_per_shard=1, progress=False)
    written = sorted(p.name for p in out.glob("train-*"))
    with pytest.raises(ValueError, match=r"holds shards converted with --frame_stride=1 \(asked: 2\)"):
        converter.convert(str(synthetic_root), str(out), ["train"], frame_stride=2, clips_per_shard=1, progress=False)
    with pytest.raises(ValueError, match=r"--clips_per_shard=1 \(asked: 2\)"):
        converter.convert(str(synthetic_root), str(out), ["train"], clips_per_shard=2, progress=False)
    grown = tmp_path / "grown"
    shutil.copytree(synthetic_root, grown)
    clip = next((grown / "cmu" / "train").glob("run0/*"))
    shutil.copytree(clip, clip.parent / "extra", copy_function=shutil.copy)
    for path in (clip.parent / "extra").iterdir():
        path.rename(path.parent / path.name.replace(clip.name, "extra"))
    with pytest.raises(ValueError, match=r"shards of another plan \(train-00000-of-00003, .*input_dir changed"):
        converter.convert(str(grown), str(out), ["train"], clips_per_shard=1, progress=False)
    assert sorted(p.name for p in out.glob("train-*")) == written, "nothing written by the refused runs"
    result = subprocess.run([sys.executable, "-m", "data_prep.surreal", f"--input_dir={synthetic_root}",
                             f"--output_dir={out}", "--splits=train", "--frame_stride=3", "--num_workers=1"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and f"error: {out} holds shards converted with --frame_stride=1" in result.stderr


def _break_truncated_mat(base):
    data = open(f"{base}_segm.mat", "rb").read()
    open(f"{base}_segm.mat", "wb").write(data[: len(data) // 2])


def _break_corrupt_mp4(base):
    open(f"{base}.mp4", "wb").write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)


def _break_missing_depth(base):
    (base.parent / f"{base.name}_depth.mat").unlink()


def _break_frame_count(base):
    info = scipy.io.loadmat(f"{base}_info.mat")
    info = {k: v for k, v in info.items() if not k.startswith("__")}
    for key in ("joints2D", "joints3D"):
        info[key] = np.concatenate([info[key], info[key][..., -1:]], axis=-1)
    for key in ("zrot", "gender"):
        info[key] = np.concatenate([info[key], info[key][-1:]], axis=0)
    scipy.io.savemat(f"{base}_info.mat", info, do_compression=True)


def _break_nan_joints(base):
    info = {k: v for k, v in scipy.io.loadmat(f"{base}_info.mat").items() if not k.startswith("__")}
    info["joints3D"][0, 3, 2] = np.nan
    scipy.io.savemat(f"{base}_info.mat", info, do_compression=True)


@pytest.mark.parametrize(
    "breaker, file_suffix, words",
    [
        (_break_truncated_mat, "_segm.mat", "unreadable MATLAB file"),
        (_break_corrupt_mp4, ".mp4", "decoded 0 frames"),
        (_break_missing_depth, "_depth.mat", "missing file"),
        (_break_frame_count, ".mp4", "decoded 6 frames, _info.mat says 7"),
        (_break_nan_joints, "_info.mat", "'joints3D' contains NaN"),
    ],
)
def test_a_bad_clip_is_named_and_the_others_still_convert(synthetic_root, tmp_path, breaker, file_suffix, words):
    root = tmp_path / "in"
    shutil.copytree(synthetic_root, root)
    bad = sorted(root.glob("cmu/train/run0/*/*_info.mat"))[1]
    base = bad.parent / bad.name[: -len("_info.mat")]
    breaker(base)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.surreal", f"--input_dir={root}", f"--output_dir={out}", "--splits=train",
         "--num_workers=1", "--clips_per_shard=2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    manifest = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    clip_name = f"train/run0/{base.parent.name}/{base.name}"
    assert list(manifest["failed"]) == [clip_name]
    reason = manifest["failed"][clip_name]
    assert f"{base}{file_suffix}" in reason and words in reason, reason
    assert clip_name in result.stderr and words in result.stderr
    assert len(manifest["clips"]) == 2 and manifest["frames_written"] == 12
    assert len(_records(out, "train")) == 12


def test_missing_root_is_a_clear_error(tmp_path, synthetic_root):
    with pytest.raises(FileNotFoundError, match="cmu"):
        converter.convert(str(tmp_path / "nowhere"), str(tmp_path / "out"), ["train"], progress=False)
    # SURREAL's download unpacks to SURREAL/data/cmu: given SURREAL/, the error names the root below it.
    (tmp_path / "SURREAL" / "data" / "cmu").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"did you mean --input_dir={tmp_path / 'SURREAL' / 'data'}"):
        converter.convert(str(tmp_path / "SURREAL"), str(tmp_path / "out"), ["train"], progress=False)
    (tmp_path / "root" / "cmu" / "train" / "run0").mkdir(parents=True)  # the layout, but no clips (or other splits')
    with pytest.raises(FileNotFoundError, match=r"no clips under .*root/cmu/\{val,test\}/run\*/<seq>/"):
        converter.convert(str(tmp_path / "root"), str(tmp_path / "out"), ["val", "test"], progress=False)
    assert not (tmp_path / "out").exists(), "nothing converted is not a finished conversion"
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(NotADirectoryError, match=f"--output_dir={tmp_path / 'file'}: cannot be made a folder"):
        converter.convert(str(synthetic_root), str(tmp_path / "file"), ["train"], progress=False)


@pytest.mark.parametrize(
    "flag, words",
    [("--splits=train,validation", "subset of SURREAL's splits"), ("--task_index=2", "below --num_tasks")],
)
def test_flags_that_would_convert_nothing_are_refused(tmp_path, flag, words):
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.surreal", f"--input_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}",
         "--num_tasks=2", flag],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and words in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_embedded_data_prepared_by_another_process_is_waited_for(tmp_path, capsys):
    """Studies started at once on one study dir prepare the same embedded data: they wrote the same temporary files
    (a clip half-written by two processes, a rename whose file the other had moved). The later one waits for the
    earlier, then finds the data made."""
    with held_by_another_process(f"embedded._prepared_alone({str(tmp_path)!r})",
                                 f"open({str(tmp_path / 'released')!r}, 'w').close()"):  # fmt: skip
        train, _ = embedded.prepare(str(tmp_path), train_clips=1, val_clips=1, num_frames=2, frame_stride=1)
    assert (tmp_path / "released").exists(), "prepared while another process held the data"
    assert glob.glob(train)
    assert f"note: another process is preparing the embedded data in {tmp_path}; waiting" in capsys.readouterr().err


def test_embedded_data_of_other_settings_is_named(tmp_path):
    """A study dir reused with another preset: the cached embedded data would be converted into a second set of
    shards; the error names the data's folder and the setting."""
    embedded.prepare(str(tmp_path), train_clips=3, val_clips=1, num_frames=2, frame_stride=1)
    with pytest.raises(converter.OtherConversion, match=rf"embedded data under {tmp_path} .*--clips_per_shard=1"):
        embedded.prepare(str(tmp_path), train_clips=16, val_clips=1, num_frames=2, frame_stride=1)


def test_the_converters_parent_process_does_not_start_tensorflow():
    """Only the workers decode and check frames with TensorFlow; the parent that plans shards and merges their records
    stays light (importing the converter: 71 MB and 0.3 s instead of 609 MB and 3.9 s with TensorFlow)."""
    probe = "import sys, data_prep.surreal; print('tensorflow' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False"


def test_a_shard_interleaves_its_clips_each_in_a_random_frame_order(records_dir):
    """Its first records hold random frames of every clip, so a run that reads a share of each shard draws on every
    clip, as SURREAL's reference loader (a random clip and frame per crop), not on a few whole clips."""
    shard = str(records_dir / "train-00000-of-00002.tfrecord")
    first = [(r["clip"].numpy().decode(), int(r["frame"])) for r in map(parse_example, tf.data.TFRecordDataset(shard))]
    clips = [clip for clip, _ in first]
    assert len(set(clips)) == 2 and all(a != b for a, b in zip(clips, clips[1:], strict=False)), "round robin"
    for clip in set(clips):
        frames = [t for c, t in first if c == clip]
        assert sorted(frames) == list(range(6)) and frames != sorted(frames), f"{clip}: a random order of its frames"
    record = json.loads((records_dir / "parts" / "train-00000-of-00002.json").read_text())
    assert record["interleaved"] and record["frames_written"] == 12
