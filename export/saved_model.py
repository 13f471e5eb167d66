r"""Exports a trained work dir as a SavedModel in TF Serving's layout.

    python -m export.saved_model --workdir=W --export_dir=E [--version=N] [--model_name=mtha]

Writes E/<N>/ (default N: one more than the highest version already there) with the signatures of
`export.serving`, `assets.extra/tf_serving_warmup_requests`, and E/models.config, an example TF Serving model config
(base path /models/<model_name>, as in `docker run -v E:/models/<model_name> tensorflow/serving`). The version is
written under a temporary name and renamed when complete, so a running server never sees half an export.
"""

import os
import re
import shutil
import sys

import cv2
import numpy as np
import tensorflow as tf
from absl import app, flags

from export.serving import ServingModule
from mtha_tf import atomic_files
from mtha_tf.absl_logs import without_info_logs
from mtha_tf.config import ConfigError

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def _versions(export_dir):
    """The numbered version folders' numbers under a base path, highest first."""
    names = os.listdir(export_dir) if os.path.isdir(export_dir) else []
    return sorted((int(name) for name in names if name.isdigit()), reverse=True)


def next_version(export_dir):
    return max(_versions(export_dir), default=0) + 1


def resolve_version(path):
    """`path` if it holds a SavedModel, else its highest version folder that does (what TF Serving serves from a base
    path: a training run's `W/export` holds `W/export/<epochs>`); FileNotFoundError naming `path` otherwise."""
    for candidate in [path] + [os.path.join(path, str(version)) for version in _versions(path)]:
        if tf.saved_model.contains_saved_model(candidate):
            return candidate
    raise FileNotFoundError(f"{path}: no SavedModel; expected an export's base folder (E) or a version folder (E/<N>)")


def warmup_requests(model_name, input_size):
    """TF Serving PredictionLog records: batch 1 and 4 of serving_default, so the first real call is not slow."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (input_size, input_size, 3), dtype=np.uint8)
    encoded = cv2.imencode(".png", image)[1].tobytes()
    records = []
    for batch in (1, 4):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
        )
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([encoded] * batch))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def models_config(model_name):
    return (
        "model_config_list {\n  config {\n"
        f'    name: "{model_name}"\n    base_path: "/models/{model_name}"\n    model_platform: "tensorflow"\n'
        "  }\n}\n"
    )


def define_model_name_flag(helptext):
    """--model_name, for this command and the local server: a name TF Serving's REST path (/v1/models/<name>) and
    the config's base path (/models/<name>) take as they are."""
    flags.DEFINE_string("model_name", "mtha", helptext)
    flags.register_validator("model_name", lambda name: bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)),
                             "expected letters, digits, '_', '.' or '-', e.g. mtha")  # fmt: skip


def export_model(model, task_names, input_size, export_dir, version=None, model_name="mtha"):
    """Saves `model` (only its last stack) under export_dir/<version>; returns that path."""
    atomic_files.make_folder(export_dir, "export_dir")
    version = version or next_version(export_dir)
    final = os.path.join(export_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; pick another --version (TF Serving versions are immutable)")
    partial = atomic_files.partial_path(final)  # hidden and not a number: TF Serving never loads it as a version
    shutil.rmtree(partial, ignore_errors=True)
    module = ServingModule(model, task_names, input_size)
    with without_info_logs():
        tf.saved_model.save(module, partial, signatures=module.signatures())
    os.makedirs(os.path.join(partial, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(partial, WARMUP_FILE)) as writer:
        for record in warmup_requests(model_name, input_size):
            writer.write(record)
    os.replace(partial, final)
    config_path = os.path.join(export_dir, "models.config")
    if not os.path.exists(config_path):
        atomic_files.write_text(config_path, models_config(model_name))
    else:  # kept: it may hold the user's edits (version policy, other models)
        with open(config_path) as f:
            named = f'name: "{model_name}"' in f.read()
        if not named:
            print(f"note: {config_path} serves no model named {model_name!r}; it is left as it is (an earlier export "
                  f"wrote it, or you did): add an entry for {model_name!r}", file=sys.stderr)  # fmt: skip
    return final


def export_workdir(workdir, export_dir, version=None, model_name="mtha"):
    from mtha_tf.evaluate import load_trained

    config, model = load_trained(workdir)
    return export_model(model, config.task_names(), config.input_size, export_dir, version, model_name)


def main(argv):
    del argv
    values = flags.FLAGS
    try:
        path = export_workdir(values.workdir, values.export_dir, values.version, values.model_name)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ConfigError) as error:  # no finished run; a
        # version already there; an export dir that cannot be a folder
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A finished training work dir.", required=True)
    flags.DEFINE_string("export_dir", None, "TF Serving's model base path; versions go in numbered folders.",
                        required=True)  # fmt: skip
    flags.DEFINE_integer("version", None, "Version folder (default: one more than the highest present).", lower_bound=1)
    define_model_name_flag("The name TF Serving serves the model under.")
    app.run(main)
