"""Writes that never leave a half-written file: write under a temporary name, then rename (atomic on POSIX)."""

import contextlib
import json
import os


def partial_path(path):
    """The temporary name `path` is written under: `dir/.partial.<name>`. It keeps the name's extensions (OpenCV,
    matplotlib and Keras pick the format from them), and, hidden, it matches no reader's pattern (`train-*.tfrecord`,
    `*.mp4`), so a run killed mid-write leaves nothing that is read as data."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".partial.{name}")


@contextlib.contextmanager
def replacing(path):
    """`with replacing(path) as partial:` write `partial`; it becomes `path` when the block ends, and is removed if
    the block raises, so `path` holds either its old content or the complete new one."""
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        # Nothing to remove (never written; a folder in the path that is a file) must not hide the error itself.
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise


def make_folder(path, flag):
    """`os.makedirs(path, exist_ok=True)`; where `path` cannot be a folder (a file of that name, no permission, a URL),
    NotADirectoryError naming the command's flag, `--<flag>=<path>: cannot be made a folder (<reason>)`."""
    if "://" in path:  # os.makedirs("gs://b/run") makes ./gs:/b/run: everything would land there, not in the bucket
        raise NotADirectoryError(f"--{flag}={path}: cannot be made a folder (a URL; this writes with the local file "
                                 "system: give a local folder, or the bucket mounted as one, e.g. with "
                                 "gcsfuse)")  # fmt: skip
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise NotADirectoryError(f"--{flag}={path}: cannot be made a folder ({error.strerror})") from None


def write_text(path, text):
    with replacing(path) as partial, open(partial, "w") as f:
        f.write(text)


def write_json(path, payload, **options):
    write_text(path, json.dumps(payload, indent=1, sort_keys=True, **options))
