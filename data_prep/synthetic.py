r"""Generates clips in SURREAL's exact on-disk format: the embedded default dataset.

    python -m data_prep.synthetic --output_dir=D --num_clips=N --num_frames=T --seed=S [--split=train]

writes `D/cmu/<split>/run0/<seq>/<seq>_c0001{.mp4,_info.mat,_segm.mat,_depth.mat}` for N clips. People are volumetric
SMPL-like bodies (data_prep/body_model.py) ray cast with a z-buffer (data_prep/render.py), placed and filmed the way
SURREAL's renderer does it (one body rotation and camera per clip, camera distance ~ N(8, 1) m, SURREAL's camera), so
`joints2D` is the SURREAL projection of `joints3D` and image, segmentation and depth agree pixel for pixel.
A clip depends only on (seed, split, clip index): runs are deterministic and clips already on disk are kept.
"""

import dataclasses
import multiprocessing
import os
import sys
import time

import cv2
import numpy as np
import scipy.io
from absl import app, flags
from scipy.spatial.transform import Rotation

from data_prep import body_model, render
from mtha_tf import atomic_files, surreal

_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
# SMPL's frame (y up, z forward) -> SURREAL's world, where -Y is up (read off the real `_info.mat` files).
_SMPL_TO_WORLD = np.diag([1.0, -1.0, -1.0])
_SHIRT_RED = np.array([0.9, 0.1, 0.1])
_SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.52], [0.70, 0.50, 0.36], [0.45, 0.31, 0.22]])


def _appearances(rng):
    """One clothing/skin look per SMPL part label (index = label - 1)."""

    def cloth():
        pattern = rng.choice(3)  # plain, stripes, checks
        frequency = np.zeros(3) if pattern == 0 else rng.uniform(8, 30, 3) * (np.arange(3) < pattern)
        return render.Appearance(rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3), frequency)

    tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.1)
    skin = render.Appearance(tone, tone * 0.9, np.zeros(3))
    hair = rng.uniform(0.02, 0.5) * np.ones(3)
    # A face below the hairline and a red shirt front (the torso's whole front half, the back in the top's colour)
    # show which way the body faces, as faces and clothes do in SURREAL (render.Appearance). The front is one thing
    # on everyone, as every face is a face, and a saturated one: fronts that changed with every clip (a chest print,
    # a band of a colour off the top's) left 4000-6000-step runs at chance on left and right; a white band down
    # the middle taught the arms but not the legs, white over the whole front barely the hips and knees, red over it
    # the hips and knees too (BUILD.md, "The embedded data"). No further draws, so the rest of a clip is as before.
    head = render.Appearance(hair, hair, np.zeros(3), front=tone, front_patch=(np.inf, -np.inf, 0.035))
    top, bottom, shoes = cloth(), cloth(), render.Appearance(*rng.uniform(0.0, 0.4, (2, 3)), np.zeros(3))
    torso = dataclasses.replace(top, front=_SHIRT_RED)
    forearm = top if rng.random() < 0.6 else skin
    shin = bottom if rng.random() < 0.8 else skin
    by_part = {1: bottom, 2: bottom, 3: bottom, 4: torso, 5: shin, 6: shin, 7: torso, 8: shoes, 9: shoes, 10: torso}
    by_part.update({11: shoes, 12: shoes, 13: skin, 14: top, 15: top, 16: head, 17: top, 18: top})
    by_part.update({19: forearm, 20: forearm, 21: skin, 22: skin, 23: skin, 24: skin})
    return [by_part[label] for label in range(1, 25)]


def generate_clip(rng, num_frames):
    """Returns (rgb [T,H,W,3] uint8, segm [T,H,W] uint8, depth [T,H,W] float32, info dict as in `_info.mat`)."""
    gender = int(rng.integers(2))
    betas = rng.normal(0.0, 1.0, 10)
    offsets, height_scale, girth_scale = body_model.body_dimensions(betas, gender)
    parts = body_model.part_ellipsoids(offsets, height_scale, girth_scale)
    rotations = body_model.local_rotations(
        body_model.sample_root_orientation(rng, num_frames), body_model.sample_motion(rng, num_frames)
    )
    joints_body, global_rot = body_model.forward_kinematics(offsets, rotations)

    zrot = rng.uniform(0.0, 2 * np.pi)
    body_to_world = _SMPL_TO_WORLD @ Rotation.from_euler("y", zrot).as_matrix()
    rest_joints, _ = body_model.forward_kinematics(offsets, np.tile(np.eye(3), (1, 24, 1, 1)))
    pelvis_height = -rest_joints[0, :, 1].min() + 0.05
    start = np.array([rng.uniform(-0.3, 0.3), -pelvis_height, rng.uniform(-0.3, 0.3)])
    drift = np.array([rng.normal(0, 0.3), 0.0, rng.normal(0, 0.3)])
    pelvis = start + drift * np.linspace(0, 1, num_frames)[:, None]
    joints_world = (pelvis[:, None] + joints_body @ body_to_world.T).astype(np.float32)

    cam_dist = float(np.clip(rng.normal(8.0, 1.0), 5.5, 11.0))
    cam_loc = (start + np.array([cam_dist - 1.0, 0.03, 0.0])).astype(np.float32)
    rotation, translation = surreal.extrinsics(cam_loc)
    joints2d = np.round(surreal.project(surreal.world_to_camera(joints_world, cam_loc)))

    looks = _appearances(rng)
    background = render.random_background(rng, surreal.FRAME_HEIGHT, surreal.FRAME_WIDTH)
    direction = rng.normal(0, 1, 3) + np.array([0.0, 0.5, 2.0])
    light = (rng.uniform(0.3, 0.6), direction / np.linalg.norm(direction))
    rgb, segm, depth = [], [], []
    for t in range(num_frames):
        to_camera = rotation @ body_to_world
        ellipsoids = []
        for index, (centre, axes, radii) in enumerate(parts):
            joint = index  # part label index + 1 is attached to joint index
            world = pelvis[t] + body_to_world @ (joints_body[t, joint] + global_rot[t, joint] @ centre)
            camera_axes = to_camera @ global_rot[t, joint] @ axes
            ellipsoids.append(
                render.Ellipsoid(rotation @ world + translation, camera_axes, radii, index + 1, looks[index])
            )
        frame_rgb, frame_segm, frame_depth = render.render(ellipsoids, background, light)
        rgb.append(frame_rgb)
        segm.append(frame_segm)
        depth.append(frame_depth)

    info = {
        "joints2D": joints2d.transpose(2, 1, 0).astype(np.float32),
        "joints3D": joints_world.transpose(2, 1, 0),
        "camLoc": cam_loc.reshape(3, 1),
        "camDist": np.array([[cam_dist]], np.float32),
        "zrot": np.full((num_frames, 1), zrot, np.float32),
        "pose": body_model.axis_angle(rotations).T.astype(np.float32),
        "shape": np.tile(betas[:, None], (1, num_frames)).astype(np.float32),
        "gender": np.full((num_frames, 1), gender, np.uint8),
        # SURREAL stores 9 spherical-harmonics coefficients; ours are (ambient, light direction, 0 x 5).
        "light": np.tile(np.r_[light[0], light[1], np.zeros(5)][:, None], (1, num_frames)).astype(np.float32),
        "source": "cmu",
        "stride": np.array([[50]], np.uint8),
    }
    return np.stack(rgb), np.stack(segm), np.stack(depth), info


def clip_paths(output_dir, split, seq, clip_no=1):
    """The four files of one clip, exactly as SURREAL lays them out."""
    base = os.path.join(output_dir, "cmu", split, "run0", seq, f"{seq}_c{clip_no:04d}")
    return {"mp4": base + ".mp4", "info": base + "_info.mat", "segm": base + "_segm.mat", "depth": base + "_depth.mat"}


def write_mp4(path, rgb_frames):
    """Writes RGB frames as a 30 fps MPEG-4 video (OpenCV's wheels carry no H.264 encoder)."""
    height, width = rgb_frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV could not open an MPEG-4 writer")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    for frame in rgb_frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def write_clip(paths, seq, rgb, segm, depth, info):
    """Writes the clip's four files under temporary names, then renames them (the `_info.mat` last)."""
    os.makedirs(os.path.dirname(paths["info"]), exist_ok=True)
    num_frames = len(rgb)
    info = dict(info, sequence=f"{seq}_c0001", clipNo=np.array([[1]], np.uint8))
    info["bg"] = np.array([[f"synthetic/{seq}_background"] * num_frames], dtype=object)
    info["cloth"] = np.array([[f"synthetic/{seq}_cloth"] * num_frames], dtype=object)
    tables = {
        "segm": {f"segm_{t + 1}": segm[t] for t in range(num_frames)},
        "depth": {f"depth_{t + 1}": depth[t] for t in range(num_frames)},
        "info": info,
    }
    partial = {kind: atomic_files.partial_path(path) for kind, path in paths.items()}
    write_mp4(partial["mp4"], rgb)
    for kind, table in tables.items():
        scipy.io.savemat(partial[kind], table, do_compression=True, appendmat=False)
    for kind in ("mp4", "segm", "depth", "info"):
        os.replace(partial[kind], paths[kind])


def _clip_paths_for(output_dir, split, seed, index):
    # The split's digit then the whole seed: `seed % 10` made seeds 1 and 11 share names, and a second run skipped
    # the other seed's clips as already present.
    seq = f"{_SPLIT_CODES.get(split, 9)}{seed}_{index + 1:02d}"
    return seq, clip_paths(output_dir, split, seq)


def _generate_one(args):
    output_dir, split, seed, index, num_frames = args
    seq, paths = _clip_paths_for(output_dir, split, seed, index)
    rng = np.random.default_rng([seed, _SPLIT_CODES.get(split, 9), index])
    write_clip(paths, seq, *generate_clip(rng, num_frames))
    return num_frames


def generate(output_dir, num_clips, num_frames, seed, split="train", num_workers=1):
    """Writes `num_clips` clips; returns the number of frames rendered (clips already present are skipped)."""
    jobs = [
        (output_dir, split, seed, index, num_frames)
        for index in range(num_clips)
        if not all(os.path.exists(p) for p in _clip_paths_for(output_dir, split, seed, index)[1].values())
    ]
    # A spawned worker costs seconds to start (a fresh interpreter importing the caller's main module): none for
    # fewer clips than two, and no more workers than clips.
    if min(num_workers, len(jobs)) <= 1:
        return sum(map(_generate_one, jobs))
    with multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs))) as pool:
        return sum(pool.imap_unordered(_generate_one, jobs))


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags; defined only when run as a program, so importing the module stays side-effect free."""
    flags.DEFINE_string("output_dir", None, "Root that receives cmu/<split>/run0/...", required=True)
    flags.DEFINE_integer("num_clips", 10, "Number of clips.", lower_bound=1)
    flags.DEFINE_integer("num_frames", 100, "Frames per clip (SURREAL clips have 100).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Random seed; a clip depends only on (seed, split, index).", lower_bound=0)
    flags.DEFINE_enum("split", "train", list(surreal.SPLITS), "Split folder, as SURREAL's.")
    flags.DEFINE_integer("num_workers", 1, "Parallel processes.", lower_bound=1)


def main(argv):
    del argv
    start = time.perf_counter()
    try:
        atomic_files.make_folder(FLAGS.output_dir, "output_dir")
    except NotADirectoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    frames = generate(FLAGS.output_dir, FLAGS.num_clips, FLAGS.num_frames, FLAGS.seed, FLAGS.split, FLAGS.num_workers)
    seconds = time.perf_counter() - start
    clips = frames // FLAGS.num_frames
    print(f"rendered {clips} clips, {frames} frames, in {seconds:.1f} s: {frames / max(seconds, 1e-9):.1f} frames/s; "
          f"{FLAGS.num_clips - clips} clips already present kept", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
