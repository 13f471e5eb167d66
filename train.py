r"""Trains the multi-task Stacked Hourglass.

    python train.py --preset=small                       # the README's main job: ~15 min on a 2-core CPU
    python train.py --data_dir=/data/surreal_tfrecords   # the paper's setup on SURREAL
    python train.py --tasks=pose2d,depth --workdir=runs/p2d_depth

Everything a run makes goes to --workdir; running the same command again resumes from the last finished epoch.
"""

import dataclasses
import sys

from absl import app, flags

from mtha_tf import config as config_lib
from mtha_tf.trainer import TrainingFailed, train

_OVERRIDABLE = ("tasks", "num_stacks", "features", "input_size", "batch_size", "learning_rate", "epochs",
                "steps_per_epoch", "mixed_precision", "jit_compile", "seed", "data_dir")  # fmt: skip
_HELP = {"tasks": "Comma-separated subset of pose2d,segmentation,depth,pose3d.",
         "data_dir": "TFRecords from data_prep.surreal; unset = the embedded synthetic data.",
         "steps_per_epoch": "Batches per epoch (SURREAL's is 2000)."}  # fmt: skip


def define_flags():
    flags.DEFINE_enum("preset", "paper", sorted(config_lib.PRESETS), "Base configuration; other flags override it.")
    flags.DEFINE_string("workdir", "workdir", "Holds config, checkpoints, logs, metrics and the export.")
    defaults = config_lib.Config()
    for field in dataclasses.fields(config_lib.Config):
        if field.name not in _OVERRIDABLE:
            continue
        helptext = _HELP.get(
            field.name, f"Overrides the preset's {field.name} (paper: {getattr(defaults, field.name)})."
        )
        kind = type(getattr(defaults, field.name))
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            kind, flags.DEFINE_string
        )
        define(field.name, None, helptext)


def main(argv):
    del argv
    values = flags.FLAGS
    config = config_lib.make_config(values.preset, **{name: values[name].value for name in _OVERRIDABLE})
    try:
        summary = train(config, values.workdir)
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for state in ("untrained", "trained"):
        figures = ", ".join(f"{k} {v:.2f}" for k, v in summary["headline"][state].items())
        print(f"held-out {state:>9}: {figures}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
