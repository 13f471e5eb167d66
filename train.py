r"""Trains the multi-task Stacked Hourglass.

    python train.py --preset=small                       # the README's main job: 9-18 min on a 2-core CPU
    python train.py --data_dir=/data/surreal_tfrecords   # the paper's setup on SURREAL
    python train.py --tasks=pose2d,depth --workdir=runs/p2d_depth

Everything a run makes goes to --workdir; running the same command again resumes from the last finished epoch.
"""

import sys

from absl import app, flags

from mtha_tf import cpu_runtime

cpu_runtime.configure_for_training()  # oneDNN kernels and fewer malloc arenas: read once, at start-up

from mtha_tf import config_flags  # noqa: E402
from mtha_tf.config import ConfigError  # noqa: E402


def main(argv):
    del argv
    try:
        config = config_flags.config_from_flags()
    except ConfigError as error:  # names each bad flag and what it expects, before anything is built or written
        print(f"error: {error}", file=sys.stderr)
        return 1
    # Imported here, not above: the data generator's spawned workers import this file as their main module, and
    # should not each pay for starting TensorFlow.
    from mtha_tf.data.pipeline import CorruptRecordError
    from mtha_tf.trainer import TrainingFailed, train

    try:
        summary = train(config, flags.FLAGS.workdir)
    except (TrainingFailed, ConfigError, FileNotFoundError, CorruptRecordError) as error:  # each names what, where
        print(f"error: {error}", file=sys.stderr)
        return 1
    for state in ("untrained", "trained"):
        figures = ", ".join(f"{k} {v:.2f}" for k, v in summary["headline"][state].items())
        print(f"held-out {state:>9}: {figures}")
    return 0


if __name__ == "__main__":
    config_flags.define_config_flags()
    flags.adopt_module_key_flags(config_flags)  # --help lists them with this file's own flags
    flags.DEFINE_string("workdir", "workdir", "Holds config, checkpoints, logs, metrics and the export.")
    app.run(main)
