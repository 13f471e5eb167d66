"""absl flags for the Config fields a user may override, shared by `train.py` and `python -m mtha_tf.study`."""

import dataclasses

from absl import flags

from mtha_tf import config as config_lib

OVERRIDABLE = ("tasks", "num_stacks", "features", "input_size", "batch_size", "learning_rate", "epochs",
               "steps_per_epoch", "mixed_precision", "jit_compile", "seed", "data_dir",
               "depth_background_weight", "lr_schedule")  # fmt: skip
_HELP = {"tasks": "Comma-separated subset of pose2d,segmentation,depth,pose3d.",
         "data_dir": "TFRecords from data_prep.surreal; unset = the embedded synthetic data.",
         "steps_per_epoch": "Batches per epoch (SURREAL's is 2000)."}  # fmt: skip


def define_config_flags(exclude=()):
    """--preset plus one flag per overridable Config field (unset flags keep the preset's value)."""
    flags.DEFINE_enum("preset", "paper", sorted(config_lib.PRESETS), "Base configuration; other flags override it.")
    defaults = config_lib.Config()
    for field in dataclasses.fields(config_lib.Config):
        if field.name not in OVERRIDABLE or field.name in exclude:
            continue
        paper_value = getattr(defaults, field.name)
        helptext = _HELP.get(field.name, f"Overrides the preset's {field.name} (paper: {paper_value}).")
        kind = type(paper_value)
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            kind, flags.DEFINE_string
        )
        define(field.name, None, helptext)


def config_from_flags(**fixed):
    """The Config the parsed flags describe; `fixed` fields win over flags."""
    values = flags.FLAGS
    overrides = {name: values[name].value for name in OVERRIDABLE if name in values and name not in fixed}
    return config_lib.make_config(values.preset, **overrides, **fixed)
