"""Training configuration: one dataclass, named presets, written to the work dir as config.json."""

import dataclasses
import json
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
    eval_max_batches: int | None = None
    # The embedded data (used when data_dir is None): clips in SURREAL's format, generated once and cached.
    synthetic_train_clips: int = 200
    synthetic_val_clips: int = 20
    synthetic_frames: int = 100
    frame_stride: int = 1
    export: bool = True

    def task_names(self):
        return task_table.parse_tasks(self.tasks)


PRESETS = {
    "paper": Config(),
    # The README's main job: about 15 minutes on a 2-core CPU, data generation and export included.
    "small": Config(
        num_stacks=2,
        features=64,
        input_size=128,
        batch_size=8,
        epochs=5,
        steps_per_epoch=100,
        synthetic_train_clips=60,
        synthetic_val_clips=6,
        synthetic_frames=40,
        frame_stride=2,
        eval_batch_size=16,
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
    ),
}


def make_config(preset="paper", **overrides):
    """A preset with the given fields replaced (None values are ignored, so unset flags keep the preset's)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    config = dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    config.task_names()  # validates
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
    return config


# Fields that change how a run executes or what it writes besides the model, not what it trains: a finished or
# interrupted run is the same run under other values (a study started before XLA became Keras' "auto" has
# `"jit_compile": false` in its configs).
EXECUTION_FIELDS = ("jit_compile", "export")


def training_differences(saved, config):
    """["field: saved value -> config's value", ...] for the fields that change what is trained (EXECUTION_FIELDS
    aside); empty when `config` trains what `saved` describes."""
    names = [f.name for f in dataclasses.fields(Config) if f.name not in EXECUTION_FIELDS]
    return [f"{name}: {getattr(saved, name)!r} -> {getattr(config, name)!r}"
            for name in names if getattr(saved, name) != getattr(config, name)]  # fmt: skip


def differing_run(path, config):
    """Why the work dir whose config.json is at `path` does not hold a run of `config` (its checkpoints and weights
    are of another network or training); "" when it does, or when there is no config.json yet."""
    if not os.path.exists(path):
        return ""
    differences = training_differences(load(path), config)
    return f"{path} describes another configuration ({'; '.join(differences)})" if differences else ""


def save(config, path):
    atomic_files.write_json(path, dataclasses.asdict(config))


def load(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; expected a train.py work dir")
    with open(path) as f:
        return Config(**json.load(f))
