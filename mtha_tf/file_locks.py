"""Blocking advisory locks (flock) on a file, between the processes of one machine or of several sharing a file
system. Where there is no fcntl (not POSIX), the file system refuses locks (some FUSE mounts) or the lock file cannot
be made (a read-only folder: runs shared read-only whose finished evaluations a study reuses), nothing is held."""

import contextlib
import sys


@contextlib.contextmanager
def flocked(path, shared=False, waiting_note=None):
    """Holds a flock on `path` (created if missing) for the block, waiting for it: exclusive, or shared with other
    shared holders (it then only waits for an exclusive holder to let go). `waiting_note`: printed on stderr when
    another process holds the lock, before the wait (which may be long: a training, an evaluation). Yields the lock
    file, or None where nothing is held."""
    try:
        handle = open(path, "a+")
    except OSError:  # what the block writes beside it fails with its own error
        yield None
        return
    with handle:
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting_note:
                    print(waiting_note, file=sys.stderr)
                fcntl.flock(handle, mode)  # released when the file closes
        yield handle
