"""Blocking advisory locks (flock) on a file, between the processes of one machine or of several sharing a file
system. Where there is no fcntl (not POSIX) or the file system refuses locks (some FUSE mounts), nothing is held."""

import contextlib


@contextlib.contextmanager
def flocked(path, shared=False):
    """Holds a flock on `path` (created if missing) for the block, waiting for it: exclusive, or shared with other
    shared holders (it then only waits for an exclusive holder to let go)."""
    with open(path, "a+") as handle:
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)  # released when the file closes
        yield handle
