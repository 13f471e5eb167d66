"""TensorFlow's INFO logs around saving, kept out of the output of training runs and exports.

Under `absl.app` (every command of this project) absl's default verbosity is INFO, and TensorFlow's savers log through
absl at that level: at every checkpoint two "Sharding callback duration" lines (which break into Keras' progress bar),
and at every export one line per signature listing the ids of the hundreds of captured weights it renames (thousands
of characters each). The verbosity is changed through absl because the saver itself sets and restores it; warnings and
errors still come through, and `--verbosity=-2` (errors only) is kept.
"""

import contextlib

from absl import logging


@contextlib.contextmanager
def without_info_logs():
    """absl's verbosity at most WARNING inside the block, restored after it."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(min(verbosity, logging.WARNING))
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
