"""absl flags for the Config fields a user may override, shared by `train.py` and `python -m mtha_tf.study`."""

import dataclasses
import os
import typing

from absl import flags, logging

from mtha_tf import config as config_lib

OVERRIDABLE = ("tasks", "num_stacks", "features", "input_size", "batch_size", "learning_rate", "epochs",
               "steps_per_epoch", "mixed_precision", "jit_compile", "seed", "data_dir",
               "depth_background_weight", "lr_schedule", "export", "eval_frame_stride", "eval_batch_size",
               "task_weights")  # fmt: skip
_HELP = {"tasks": "Comma-separated subset of pose2d,segmentation,depth,pose3d.",
         "data_dir": "TFRecords from data_prep.surreal; unset = the embedded synthetic data.",
         "steps_per_epoch": "Batches per epoch (SURREAL's is 2000).",
         "jit_compile": "XLA for the train step; unset = Keras' auto: on with one GPU, off on CPUs and several GPUs.",
         "lr_schedule": "constant (the paper's) or cosine (decays to 0 over the run).",
         "eval_frame_stride": "Held-out frames evaluated during training (before it, at each epoch end): those whose "
                              "index in their clip is a multiple of this (paper: 10; SURREAL's val split holds ~50k "
                              "frames). python -m mtha_tf.evaluate evaluates every frame.",
         "eval_batch_size": "Held-out images per forward pass in the evaluations during training and in the study's "
                            "(paper: 8); changes no figure.",
         "task_weights": "Loss weights per task, e.g. pose2d=10,depth=0.5 (unnamed tasks: 1, the paper's plain sum; "
                         "the tasks' losses differ ~10x in size, BUILD.md 'Loss weights').",
         "export": "Export the final model as a SavedModel to <workdir>/export/<epochs> (--noexport: a run that only "
                   "needs its metrics).",
         }  # fmt: skip


def define_config_flags(exclude=(), flag_values=flags.FLAGS):
    """--preset plus one flag per overridable Config field (unset flags keep the preset's value)."""
    flags.DEFINE_enum("preset", "paper", sorted(config_lib.PRESETS), "Base configuration; other flags override it.",
                      flag_values=flag_values)  # fmt: skip
    defaults = config_lib.Config()
    for field in dataclasses.fields(config_lib.Config):
        if field.name not in OVERRIDABLE or field.name in exclude:
            continue
        paper_value = getattr(defaults, field.name)
        helptext = _HELP.get(field.name, f"Overrides the preset's {field.name} (paper: {paper_value}).")
        # A field whose default is None ("bool | None") takes the flag type of the other member of its union.
        kind = type(paper_value) if paper_value is not None else _value_type(field.type)
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            kind, flags.DEFINE_string
        )
        define(field.name, None, helptext, flag_values=flag_values)


def _value_type(annotation):
    return next(member for member in typing.get_args(annotation) if member is not type(None))


def config_from_flags(flag_values=flags.FLAGS, **fixed):
    """The Config the parsed flags describe; `fixed` fields win over flags. A local --data_dir is made absolute: the
    work dir's config.json then names the same shards from any folder (evaluating, exporting, resuming from another
    one; a relative path there read other shards or none), and resuming with the absolute spelling is no "other
    configuration". URLs (gs://...) stay as given."""
    overrides = {name: flag_values[name].value for name in OVERRIDABLE if name in flag_values and name not in fixed}
    if (weights := overrides.get("task_weights")) is not None:
        overrides["task_weights"] = parse_task_weights(weights)
    if (data_dir := overrides.get("data_dir")) and "://" not in data_dir:
        overrides["data_dir"] = os.path.abspath(data_dir)
    config = config_lib.make_config(flag_values.preset, **overrides, **fixed)
    if unused := sorted(set(overrides.get("task_weights") or ()) - set(config.task_names())):
        logging.warning("--task_weights names %s, which this run does not train (--tasks=%s): unused",
                        ",".join(unused), config.tasks)  # fmt: skip
    return config


def parse_task_weights(text):
    """The --task_weights text "pose2d=10, depth=0.5" as {"pose2d": 10.0, "depth": 0.5}; ConfigError naming the flag
    for another form (the task names and values are checked with the rest of the Config)."""
    weights = {}
    for pair in filter(None, (item.strip() for item in text.split(","))):
        task, equals, value = (part.strip() for part in pair.partition("="))
        try:
            weight = float(value) if equals else None
        except ValueError:
            weight = None
        if weight is None or task in weights:
            raise config_lib.ConfigError(f"--task_weights: expected distinct task=weight pairs like "
                                         f"'pose2d=10,depth=0.5', got {text!r}")  # fmt: skip
        weights[task] = weight
    return weights
