"""Training configuration: one dataclass, named presets, written to the work dir as config.json."""

import dataclasses
import json
import math
import os

from mtha_tf import atomic_files
from mtha_tf import tasks as task_table


@dataclasses.dataclass
class Config:
    """Defaults are the paper's setup (2 stacks, 256 features, 256 px, batch 5, RMSprop lr 1e-3, 30 epochs)."""

    tasks: str = ",".join(task_table.TASKS)
    num_stacks: int = 2
    features: int = 256
    input_size: int = 256
    hourglass_depth: int = 4
    batch_size: int = 5
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # the paper's; "cosine" decays to 0 over the run (short runs end less noisy)
    epochs: int = 30
    steps_per_epoch: int = 2000  # SURREAL's training "epoch" is 2000 batches
    task_weights: dict = dataclasses.field(default_factory=dict)
    # Weight of background pixels in the depth cross-entropy (1 = the paper). The reference depth RMSE charges a
    # foreground pixel predicted as background ~10 bins and ignores the reverse, so a short run that is unsure of the
    # bins on thin limbs loses most there; < 1 moves those pixels to foreground (BUILD.md, Metrics).
    depth_background_weight: float = 1.0
    mixed_precision: bool = False
    # XLA for the train step. None is Keras' "auto": on with one GPU (pose2d trains 1.6x faster on an H100,
    # docs/performance.md), off on CPUs (slower there) and under a distribution strategy (Keras' rule).
    jit_compile: bool | None = None
    seed: int = 0
    data_dir: str | None = None  # TFRecords from data_prep.surreal; None = the embedded synthetic data
    eval_batch_size: int = 8
    # The held-out frames evaluated during training (untrained, at each epoch end, finished): those whose index in
    # their clip is a multiple of it. SURREAL's 100-frame clips hold near-duplicate neighbours, and its val split
    # ~50k frames: every one at every epoch end is five times the 10,000 crops an epoch trains on. The tables of
    # `python -m mtha_tf.evaluate` and the study use every frame.
    eval_frame_stride: int = 10
    # The embedded data (used when data_dir is None): clips in SURREAL's format, generated once and cached.
    synthetic_train_clips: int = 200
    synthetic_val_clips: int = 20
    synthetic_frames: int = 100
    frame_stride: int = 1
    export: bool = True

    def __post_init__(self):
        # Every Config is checked, from a preset and flags or from a config.json: a bad value used to fail deep in
        # Keras or tf.data (batch_size=0, input_size=100), or to train something useless without a word
        # (learning_rate=-1 ascends; steps_per_epoch=0 is an endless epoch on the repeated dataset).
        if problems := config_problems(self):
            raise ConfigError("; ".join(problems))
        # One spelling per network: "--tasks=depth,pose2d" and " pose2d,depth" build the same model, and a work dir
        # of one is resumed by the other (they used to differ in config.json, and the second was refused).
        self.tasks = ",".join(self.task_names())
        # Likewise one spelling per loss: a weight of 1 is the paper's sum, and the weight of a task the run does not
        # train is unused (the study gives one --task_weights to each of its combinations), so neither makes the run
        # another one.
        self.task_weights = {task: float(weight) for task, weight in self.task_weights.items()
                             if task in self.task_names() and weight != 1}  # fmt: skip

    def task_names(self):
        return task_table.parse_tasks(self.tasks)


class ConfigError(ValueError):
    """A configuration training cannot use; the message names each field, what it expects and what it got."""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value):
    return _is_int(value) and value > 0


def _is_positive_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and value > 0


def _is_task_weights(value):
    return isinstance(value, dict) and all(
        task in task_table.TASKS and (_is_positive_number(weight) or weight == 0) for task, weight in value.items()
    )


_POSITIVE_INTEGER = (_is_positive_int, "a positive integer")
_EXPECTED = {
    "num_stacks": _POSITIVE_INTEGER,
    "features": (lambda value: _is_int(value) and value >= 2, "an integer >= 2 (a residual's bottleneck is half)"),
    "input_size": _POSITIVE_INTEGER,
    "hourglass_depth": _POSITIVE_INTEGER,
    "batch_size": _POSITIVE_INTEGER,
    "learning_rate": (_is_positive_number, "a positive number"),
    "lr_schedule": (lambda value: value in ("constant", "cosine"), "'constant' or 'cosine'"),
    "epochs": _POSITIVE_INTEGER,
    "steps_per_epoch": _POSITIVE_INTEGER,
    "task_weights": (_is_task_weights, f"a dict from tasks ({','.join(task_table.TASKS)}) to numbers >= 0"),
    "depth_background_weight": (_is_positive_number, "a positive number (1 = the paper's loss)"),
    "mixed_precision": (lambda value: isinstance(value, bool), "true or false"),
    "jit_compile": (lambda value: value is None or isinstance(value, bool), "true, false or null (Keras' auto)"),
    "seed": (_is_int, "an integer"),
    "data_dir": (lambda value: value is None or isinstance(value, str), "a folder's path or null (embedded data)"),
    "eval_batch_size": _POSITIVE_INTEGER,
    "eval_frame_stride": _POSITIVE_INTEGER,
    "synthetic_train_clips": _POSITIVE_INTEGER,
    "synthetic_val_clips": _POSITIVE_INTEGER,
    "synthetic_frames": _POSITIVE_INTEGER,
    "frame_stride": _POSITIVE_INTEGER,
    "export": (lambda value: isinstance(value, bool), "true or false"),
}


def config_problems(config):
    """["field: expected ..., got ...", ...] for every field of `config` that training cannot use."""
    problems = [f"{name}: expected {expected}, got {getattr(config, name)!r}"
                for name, (is_valid, expected) in _EXPECTED.items() if not is_valid(getattr(config, name))]  # fmt: skip
    try:
        task_table.parse_tasks(config.tasks)
    except (ValueError, AttributeError):
        problems.insert(0, f"tasks: expected a non-empty comma-separated subset of {','.join(task_table.TASKS)}, "
                           f"got {config.tasks!r}")  # fmt: skip
    if not problems and all(config.task_weights.get(task, 1) == 0 for task in task_table.parse_tasks(config.tasks)):
        problems.append(f"task_weights: every trained task ({config.tasks}) has weight 0, so nothing would be learned; "
                        f"got {config.task_weights!r}")  # fmt: skip
    # The stem brings the input to 1/4, and each hourglass level halves it again: the skip additions need every
    # level's size to be even.
    multiple = 4 * 2**config.hourglass_depth if _is_positive_int(config.hourglass_depth) else 1
    if _is_positive_int(config.input_size) and config.input_size % multiple:
        problems.append(f"input_size: expected a multiple of {multiple} (4 x 2^hourglass_depth), "
                        f"got {config.input_size}")  # fmt: skip
    return problems


PRESETS = {
    "paper": Config(),
    # The README's main job: 9-18 minutes on a 2-core CPU (AVX-512 to AVX2), data generation and export included.
    "small": Config(
        num_stacks=2,
        features=64,
        input_size=128,
        batch_size=8,
        epochs=5,
        steps_per_epoch=100,
        # Many short clips: a clip is one person, look, background, camera and facing, and frames of one clip add
        # little that others do not. 24 held-out people instead of 6 at the same 120 frames (rendering and
        # conversion cost the same: they go by the frame): the held-out figures no longer hang on a few people.
        synthetic_train_clips=240,
        synthetic_val_clips=24,
        synthetic_frames=10,
        frame_stride=2,
        eval_batch_size=16,
        eval_frame_stride=1,  # 120 held-out frames
        depth_background_weight=0.2,  # see the field's comment; the paper preset keeps 1
        lr_schedule="cosine",
    ),
    # Tests: seconds per step. Two hourglass levels instead of four: the step's first trace, which dominates a tiny
    # run, scales with the number of layers (test_model builds the paper's four-level hourglass at tiny sizes).
    "tiny": Config(
        num_stacks=1,
        features=32,
        input_size=64,
        hourglass_depth=2,
        batch_size=4,
        epochs=2,
        steps_per_epoch=3,
        synthetic_train_clips=3,
        synthetic_val_clips=1,
        synthetic_frames=6,
        frame_stride=2,
        eval_batch_size=4,
        eval_frame_stride=1,
    ),
}


def make_config(preset="paper", **overrides):
    """A preset with the given fields replaced (None values are ignored, so unset flags keep the preset's)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown config fields {sorted(unknown)}")
    return dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


# Fields that change how a run executes or what it writes besides the model, not what it trains: a finished or
# interrupted run is the same run under other values (the evaluation's figures do not depend on its batch; a study
# started before XLA became Keras' "auto" has `"jit_compile": false` in its configs; runs before eval_frame_stride
# evaluated every frame).
EXECUTION_FIELDS = ("jit_compile", "export", "eval_frame_stride", "eval_batch_size")


def trains_longer(saved, config):
    """Whether `config` continues the run `saved` describes for more epochs: with the paper's constant learning rate
    the first epochs of a longer run are the shorter run, so a finished run trains on from its last checkpoint. (A
    cosine schedule spans the whole run: other epochs are another schedule from the first step.)"""
    return config.epochs > saved.epochs and saved.lr_schedule == config.lr_schedule == "constant"


def _comparable(config, name):
    """A field's value as runs are compared: a local data_dir resolved (config.json written before data dirs were
    recorded absolute may hold a relative one, the same shards from the folder it was run in)."""
    value = getattr(config, name)
    return os.path.abspath(value) if name == "data_dir" and value and "://" not in value else value


def training_differences(saved, config):
    """["field: saved value -> config's value", ...] for the fields that change what is trained (EXECUTION_FIELDS
    aside, and more epochs where they continue the run); empty when `config` trains what `saved` describes."""
    names = [f.name for f in dataclasses.fields(Config) if f.name not in EXECUTION_FIELDS]
    if trains_longer(saved, config):
        names.remove("epochs")
    differences = {name: f"{name}: {getattr(saved, name)!r} -> {getattr(config, name)!r}"
                   for name in names if _comparable(saved, name) != _comparable(config, name)}  # fmt: skip
    if "epochs" in differences and config.epochs > saved.epochs:
        differences["epochs"] += (
            " (more epochs train on only with the constant learning rate; a cosine schedule spans the run)"
        )
    return list(differences.values())


def differing_run(path, config, same_data=lambda recorded_data_dir: False):
    """Why the work dir whose config.json is at `path` does not hold a run of `config` (its checkpoints and weights
    are of another network or training); "" when it does, or when there is no config.json yet. `same_data(data_dir
    recorded in config.json)`: whether `config.data_dir`, another path, holds the same shards (then it is the same
    run's data)."""
    if not os.path.exists(path):
        return ""
    saved = load(path)
    if _comparable(saved, "data_dir") != _comparable(config, "data_dir") and same_data(saved.data_dir):
        saved = dataclasses.replace(saved, data_dir=config.data_dir)
    differences = training_differences(saved, config)
    return f"{path} describes another configuration ({'; '.join(differences)})" if differences else ""


def save(config, path):
    atomic_files.write_json(path, dataclasses.asdict(config))


def load(path):
    """The Config in a work dir's config.json; ConfigError naming the file if it does not describe a valid one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; expected a train.py work dir")
    try:
        with open(path) as f:
            fields = json.load(f)
    except ValueError as error:
        raise ConfigError(f"{path}: not JSON ({error})") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: expected a JSON object of Config fields, got {type(fields).__name__}")
    if "eval_max_batches" in fields and fields.pop("eval_max_batches") is None:  # written before eval_frame_stride
        fields.setdefault("eval_frame_stride", 1)  # those runs evaluated every frame
    if unknown := sorted(set(fields) - {f.name for f in dataclasses.fields(Config)}):
        raise ConfigError(f"{path}: unknown fields {unknown}")
    try:
        return Config(**fields)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
