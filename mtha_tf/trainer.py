"""Training: model, distribution, checkpoints and automatic resume, callbacks, final evaluation and export (what it
reads: `training_data`). `train.py` is a thin CLI."""

import contextlib
import functools
import json
import os
import socket
import sys

import keras
import tensorflow as tf

from mtha_tf import atomic_files, cpu_runtime, file_locks, losses, training_data
from mtha_tf import config as config_lib
from mtha_tf.callbacks import (
    EpochCheckpoint,
    EvaluationCallback,
    PredictionImages,
    TensorBoard,
    TerminateOnNaN,
    history_logger,
)
from mtha_tf.data.pipeline import make_dataset, naming_corrupt_files
from mtha_tf.evaluation import evaluate, forward_function, headline
from mtha_tf.fused_rmsprop import FusedRMSprop
from mtha_tf.model import build_model_for


class TrainingFailed(RuntimeError):
    """Training could not start (the work dir holds another run) or stopped early (a non-finite loss); the message
    says why."""


class WorkDirHeld(TrainingFailed):
    """Another process, `holder`, is training the work dir `folder` (`held_alone`)."""

    def __init__(self, folder, holder):
        super().__init__(f"{folder} is being trained by {holder}; wait for it to end (or stop it), or use another "
                         "--workdir")  # fmt: skip
        self.folder, self.holder = folder, holder


def cluster_config():
    """TF_CONFIG as a dict ({} when unset), checked: a cluster's launcher that sets it wrong gets an error naming the
    variable and what is wrong, not a traceback from deep in tf.distribute."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as error:
        raise TrainingFailed(f"TF_CONFIG: not JSON ({error})") from None
    fields = config if isinstance(config, dict) else {}
    cluster, task = fields.get("cluster"), fields.get("task", {})
    if not isinstance(cluster, dict) or not cluster or not all(isinstance(v, list) and v for v in cluster.values()):
        raise TrainingFailed('TF_CONFIG: expected {"cluster": {"worker": ["host:port", ...], ...}, "task": {"type": '
                             f'..., "index": ...}}}}, got {text!r}')  # fmt: skip
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise TrainingFailed(f"TF_CONFIG: task {task!r} is not of a job in the cluster ({sorted(cluster)})")
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise TrainingFailed(f"TF_CONFIG: task index {index!r} is not one of the {len(cluster[task['type']])} "
                             f"{task['type']} addresses")  # fmt: skip
    return config


def make_strategy():
    """MultiWorkerMirrored when TF_CONFIG describes a cluster, Mirrored with several GPUs, else the default."""
    if cluster_config():
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def require_even_split(batch_size, strategy):
    """Every replica must get the same share of the batch: Keras averages each replica's loss and then over the
    replicas, so an uneven split (5 images on 2 GPUs: 3 + 2) weighs some images more than others and the gradient is
    not the one-device gradient (synchronised batch norms do handle it; the losses do not)."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        below = batch_size - batch_size % replicas
        nearest = sorted({max(replicas, below), below + replicas})
        raise TrainingFailed(f"--batch_size={batch_size} does not split evenly over the {replicas} replicas (GPUs or "
                             f"workers) training it; use a multiple of {replicas}, e.g. "
                             + " or ".join(f"--batch_size={n}" for n in nearest))  # fmt: skip


def is_chief():
    config = cluster_config()
    task = config.get("task", {})
    has_chief = "chief" in config.get("cluster", {})
    return not task or task.get("type") == "chief" or (not has_chief and task.get("index", 0) == 0)


def set_precision(mixed_precision):
    """mixed_float16 on GPU (Keras adds loss scaling), mixed_bfloat16 on CPU; heads and losses stay float32."""
    if not mixed_precision:
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    policy = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    if policy == "mixed_bfloat16" and cpu_runtime.has_native_bfloat16() is False:
        print("note: --mixed_precision on this CPU computes in emulated bfloat16 (no avx512_bf16 or amx_bf16 in "
              "/proc/cpuinfo), ~10x slower than float32; drop it here (BUILD.md, Training)",
              file=sys.stderr)  # fmt: skip
    keras.mixed_precision.set_global_policy(policy)
    return policy


def initial_network(config):
    """The network `config` trains, with the weights its training starts from (drawn from its seed)."""
    keras.utils.set_random_seed(config.seed)
    return build_model_for(config)


def compile_model(config):
    model = initial_network(config)
    loss, loss_weights = losses.keras_losses(config.task_names(), config.num_stacks, config.task_weights,
                                             config.depth_background_weight)  # fmt: skip
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":  # over the whole run; resuming restores the step count, so the schedule too
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, config.epochs * config.steps_per_epoch)
    optimizer = FusedRMSprop(learning_rate, rho=0.99, epsilon=1e-8)
    jit_compile = "auto" if config.jit_compile is None else config.jit_compile
    model.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, jit_compile=jit_compile)
    return model


def build_before_fit(model, strategy, dataset):
    """Builds the model's compiled loss (and anything else unbuilt) from the dataset's element spec before fit().

    Keras 3 builds state up front only under a non-default strategy; otherwise the compiled loss creates its
    per-output loss trackers inside the first trace of the train step, and a tf.function that creates variables
    traces again: the ~10-20 s trace twice at every start (tiny preset, a 3-step fit: 29.5 s -> 17.9 s). Under a
    distribution strategy fit() would build again from a first batch that it reads and averages over the replicas,
    which fails for a nested (dict) batch across workers (keras-team/keras#20329, open), so the build here is its only
    one. Across several workers fit() also averages each step's logs along axis 0, which scalars lack, so the step
    returns them as [1] vectors (gradients are all-reduced by the strategy as usual).
    """
    with strategy.scope():
        model._symbolic_build(data_batch=dataset.element_spec)  # shapes and dtypes only: no batch is read
    if strategy is tf.distribute.get_strategy():
        return
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if not (multi_worker and strategy.extended._in_multi_worker_mode()):  # Keras' own test for the axis-0 average
        return  # one worker (a one-task TF_CONFIG): the logs stay as the step returns them
    train_step = model.train_step

    def train_step_with_vector_logs(data):
        return {name: tf.reshape(value, [1]) for name, value in train_step(data).items()}

    model.train_step = train_step_with_vector_logs


def export_final(workdir, epochs):
    """The SavedModel of the final weights under workdir/export (TF Serving's base path), as version `epochs`: a run
    trained on to more epochs adds a newer version, which TF Serving serves in place of the older one, and a
    finished run started again finds its export there."""
    from export.saved_model import export_workdir

    export_dir = os.path.join(workdir, "export")
    existing = os.path.join(export_dir, str(epochs))
    return existing if os.path.isdir(existing) else export_workdir(workdir, export_dir, version=epochs)


def _lock_path(folder):
    return os.path.join(folder, ".train.lock")


@contextlib.contextmanager
def held_alone(folder):
    """Holds `folder` for one training process (an exclusive flock on `folder/.train.lock`, released by the kernel when
    the process ends, killed or not): a second process training the same work dir (a job launched twice, a requeued
    job whose first run still lives) would write checkpoints, logs and weights between the first one's. TrainingFailed
    naming the holder otherwise. Where there is no fcntl (not POSIX) or the file system has no locks, none is held."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(_lock_path(folder), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise WorkDirHeld(folder, holder) from None
        except OSError:  # a file system without locks (some FUSE mounts): trains unheld, as before
            yield
            return
        lock.truncate(0)
        lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        yield


def wait_until_released(folder):
    """Returns once no process holds `folder` (`held_alone`), at once if none does or locks are unavailable."""
    with file_locks.flocked(_lock_path(folder), shared=True):
        pass  # no lock file possible (no such folder): nothing to wait for


def train(config, workdir, verbose=None):
    """Trains (or resumes) in `workdir`; returns the metrics written to `workdir/metrics.json`. `verbose`: Keras' fit
    verbosity; by default a progress bar on a terminal and a line per epoch otherwise (a cluster job's log, where the
    bar's carriage returns, colours and backspaces took ~600 bytes per step: ~37 MB per paper run)."""
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    # Checked before anything is written: resuming another run's checkpoints fails on the first mismatched variable,
    # after config.json has been overwritten with a configuration its weights are not of.
    same_data = functools.partial(training_data.same_shards, workdir, config.data_dir)
    if why := config_lib.differing_run(os.path.join(workdir, "config.json"), config, same_data):
        raise TrainingFailed(f"{why}; use another --workdir, or delete this one to start over")
    cluster_config()  # a bad TF_CONFIG, before anything is written
    # Before any TensorFlow op (reading shards below, listing GPUs for mixed precision): MultiWorkerMirroredStrategy
    # configures collective ops, which TensorFlow allows only before its runtime starts.
    strategy = make_strategy()
    require_even_split(config.batch_size, strategy)
    # Shards missing: an error now, before config.json would make the corrected command "another".
    training_data.check_data_dir(config)
    if (note := training_data.clip_coverage_note(config)) and is_chief():
        print(note, file=sys.stderr)
    try:
        atomic_files.make_folder(workdir, "workdir")
    except NotADirectoryError as error:
        raise TrainingFailed(str(error)) from None
    chief = is_chief()
    # Workers other than the chief keep their state apart (checkpoints are written by every worker of a
    # MultiWorkerMirroredStrategy) and generate their own copy of the deterministic embedded data.
    own_dir = workdir if chief else os.path.join(workdir, f"worker-{strategy.cluster_resolver.task_id}")
    os.makedirs(own_dir, exist_ok=True)
    with held_alone(own_dir):
        if chief:
            config_lib.save(config, os.path.join(workdir, "config.json"))
            if note := training_data.record_shards(config, workdir):
                print(note, file=sys.stderr)
        return _train_in(config, workdir, own_dir, strategy, verbose)


def _frame_stride_of(metrics_path):
    """The held-out frame stride of the evaluation in `metrics_path`, None if there is none."""
    try:
        with open(metrics_path) as f:
            return json.load(f).get("frame_stride")
    except (OSError, ValueError):
        return None


def _train_in(config, workdir, own_dir, strategy, verbose):
    """train()'s work once the work dir is checked and held: `own_dir` is the work dir, or a worker's folder in it."""
    chief = own_dir == workdir
    precision = set_precision(config.mixed_precision)
    train_pattern, val_pattern = training_data.data_patterns(config, own_dir)
    task_names = config.task_names()

    with strategy.scope():
        model = compile_model(config)
        checkpoint = EpochCheckpoint(os.path.join(own_dir, "checkpoints"), model)
        initial_epoch = checkpoint.restore()

    forward = forward_function(model)
    untrained_path = os.path.join(workdir, "metrics_untrained.json")
    if chief and _frame_stride_of(untrained_path) != config.eval_frame_stride:
        # The network as training starts it, on the frames the trained one is evaluated on: a run resumed with another
        # --eval_frame_stride rebuilds it from the seed (metrics.json compared the two on different frames before).
        initial = forward if initial_epoch == 0 else forward_function(initial_network(config))
        untrained, _ = evaluate(initial, val_pattern, task_names, config.eval_batch_size, config.input_size,
                                config.eval_frame_stride)  # fmt: skip
        atomic_files.write_json(untrained_path, untrained)

    dataset = training_data.training_dataset(config, train_pattern, initial_epoch)
    build_before_fit(model, strategy, dataset)
    sample_images = next(iter(make_dataset(val_pattern, task_names, False, 4, config.input_size)))[0]["image"]
    nan_guard = TerminateOnNaN()
    held_out = EvaluationCallback(val_pattern, task_names, config.eval_batch_size, config.input_size,
                                  config.eval_frame_stride, forward)  # fmt: skip
    callbacks = [
        nan_guard,
        held_out,
        history_logger(os.path.join(own_dir, "history.csv"), initial_epoch),  # before the checkpoint: its docstring
        checkpoint,
        TensorBoard(os.path.join(own_dir, "logs"), update_freq=20),
        PredictionImages(os.path.join(own_dir, "logs", "images"), sample_images, forward),
    ]
    with naming_corrupt_files(train_pattern):
        # shuffle=False: the dataset shuffles itself (mtha_tf.data.pipeline); Keras' default True only warns on it.
        model.fit(dataset, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # fmt: skip
    if nan_guard.message:
        raise TrainingFailed(nan_guard.message)

    results = held_out.last_results  # the last epoch's evaluation is of the final weights
    if results is None:  # nothing left to train in this process (a finished run started again)
        results, _ = evaluate(forward, val_pattern, task_names, config.eval_batch_size, config.input_size,
                              config.eval_frame_stride)  # fmt: skip
    with open(untrained_path) as f:
        untrained = json.load(f)
    summary = {
        "trained": results,
        "untrained": untrained,
        "headline": {"trained": headline(results), "untrained": headline(untrained)},
        "epochs": config.epochs,
        "precision": precision,
        "held_out": val_pattern,
    }
    if chief:
        with atomic_files.replacing(os.path.join(workdir, "final.weights.h5")) as partial:
            model.save_weights(partial)
        if config.export:
            summary["export"] = export_final(workdir, config.epochs)
        atomic_files.write_json(os.path.join(workdir, "metrics.json"), summary)  # written last: it marks a finished run
    return summary
