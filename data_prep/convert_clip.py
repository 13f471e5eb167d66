"""One SURREAL clip -> serialized tf.train.Examples, one per kept frame (see mtha_tf.data.schema)."""

import numpy as np

from data_prep import surreal_clip
from mtha_tf import surreal
from mtha_tf.data import schema


def clip_examples(clip, frame_stride):
    """Returns (serialized Examples for the kept frames t % frame_stride == 0, number of frames skipped).

    Raises `surreal_clip.ClipError` if any of the clip's files is bad: a failed clip puts nothing in a shard.
    """
    info, num_frames = surreal_clip.load_info(clip)
    video = surreal_clip.read_video(clip, num_frames)
    wanted = list(range(0, num_frames, frame_stride))
    segm = surreal_clip.load_frames(clip, "segm", wanted, num_frames)
    depth = surreal_clip.load_frames(clip, "depth", wanted, num_frames)
    cam_loc = info["camLoc"].ravel()
    examples = []
    skipped = 0
    for i, t in enumerate(wanted):
        joints2d_smpl = info["joints2D"][:, :, t].T.astype(np.float32)
        joints3d_world = info["joints3D"][:, :, t].T
        joints2d = joints2d_smpl[surreal.JOINTS_IX]
        if surreal_clip.skip_reason(joints2d, joints3d_world[surreal.JOINTS_IX]):
            skipped += 1
            continue
        joints3d_smpl = surreal.world_to_camera(joints3d_world, cam_loc).astype(np.float32)
        frame_depth = np.where(depth[i] <= surreal.DEPTH_BACKGROUND_THRESHOLD, depth[i], 0.0)
        examples.append(schema.encode_example({
            "image": video[t],
            "segmentation": segm[i],
            "depth": frame_depth.astype(np.float32),
            "joints2d": joints2d,
            "joints3d": joints3d_smpl[surreal.JOINTS_IX],
            "joints2d_smpl": joints2d_smpl,
            "joints3d_smpl": joints3d_smpl,
            "intrinsics": surreal.INTRINSICS,
            "cam_loc": cam_loc,
            "pose": info["pose"][:, t] if "pose" in info else np.zeros(72),
            "shape": info["shape"][:, t] if "shape" in info else np.zeros(10),
            "zrot": info["zrot"].ravel()[t],
            "gender": int(info["gender"].ravel()[t]) if "gender" in info else -1,
            "clip": clip.name,
            "frame": t,
        }))  # fmt: skip
    return examples, skipped
