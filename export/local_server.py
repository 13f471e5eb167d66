r"""A local stand-in for TF Serving's Predict API (gRPC and REST) over a SavedModel, for tests and development.

No TF Serving binary can be installed here (not on PyPI or Debian, no Docker engine), so the clients are tested against
this server. It answers like TF Serving: gRPC `tensorflow.serving.PredictionService/Predict` (the service generated in
`tensorflow-serving-api`) and REST `POST /v1/models/<name>[/versions/<v>]:predict` with the row ("instances") or
column ("inputs") format; inputs that do not match the signature, and inputs the graph rejects, are INVALID_ARGUMENT
(HTTP 400) with the reason. `GET /v1/models/<name>[/versions/<v>]` answers the model's status (what readiness probes
ask) and `.../metadata` its signatures (gRPC: `GetModelMetadata`), as TF Serving does; a version other than the one
served is NOT_FOUND.

    python -m export.local_server --saved_model=E [--grpc_port=8500] [--rest_port=8501]   # E or E/<version>
"""

import base64
import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mtha_tf import cpu_runtime

if __name__ == "__main__":  # a server process only infers: oneDNN with frozen weights, before TensorFlow starts
    cpu_runtime.configure_for_serving()

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from export.saved_model import define_model_name_flag, resolve_version  # noqa: E402


class InvalidRequest(ValueError):
    """The request does not fit the model (TF Serving's INVALID_ARGUMENT)."""


class SavedModelRunner:
    """Loads a SavedModel with plain TensorFlow and runs its signatures on numpy inputs."""

    def __init__(self, saved_model_dir, model_name="mtha"):
        self.model = tf.saved_model.load(saved_model_dir)
        self.model_name = model_name
        folder = os.path.basename(os.path.normpath(saved_model_dir))
        self.version = int(folder) if folder.isdigit() else 1  # TF Serving serves numbered folders only
        with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
            signature_defs = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0].signature_def
        self.signature_defs = get_model_metadata_pb2.SignatureDefMap(signature_def=signature_defs)

    def serves(self, name, version=None):
        """Whether a request for model `name` (and `version`, if it names one) is this model's, as TF Serving
        matches them; else the NOT_FOUND reason TF Serving gives."""
        if name != self.model_name or version not in (None, self.version):
            requested = name if version is None else f"Specific({name}, {version})"
            return f"Servable not found for request: {requested}"
        return None

    def status(self):
        """TF Serving's GetModelStatus answer, as its REST API writes it."""
        ok = {"error_code": "OK", "error_message": ""}
        return {"model_version_status": [{"version": str(self.version), "state": "AVAILABLE", "status": ok}]}

    def metadata_response(self):
        """TF Serving's GetModelMetadata answer: the signature defs."""
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        response.metadata["signature_def"].Pack(self.signature_defs)
        return response

    def metadata(self):
        """The GetModelMetadata answer as TF Serving's REST API writes it (its proto field names, no Any type URL)."""
        spec = {"name": self.model_name, "signature_name": "", "version": str(self.version)}
        as_json = json_format.MessageToDict(self.signature_defs, preserving_proto_field_name=True)
        return {"model_spec": spec, "metadata": {"signature_def": as_json}}

    def predict(self, inputs, signature_name="serving_default", untyped_numbers=False):
        """`untyped_numbers`: JSON (REST) numbers carry no dtype; they take the signature's, as in TF Serving."""
        if signature_name not in self.model.signatures:
            raise InvalidRequest(f"signature {signature_name!r} not found; have {sorted(self.model.signatures)}")
        signature = self.model.signatures[signature_name]
        specs = signature.structured_input_signature[1]
        if set(inputs) != set(specs):
            raise InvalidRequest(f"{signature_name} takes inputs {sorted(specs)}, got {sorted(inputs)}")
        tensors = {}
        for name, spec in specs.items():
            value = np.asarray(inputs[name])
            if untyped_numbers and value.dtype.kind in "iuf" and (spec.dtype.is_floating or spec.dtype.is_integer):
                value = value.astype(spec.dtype.as_numpy_dtype)
            kind = "string" if value.dtype.kind in "SUO" else value.dtype.name
            if kind != spec.dtype.name:
                raise InvalidRequest(f"input {name!r}: expected {spec.dtype.name}, got {kind}")
            if not spec.shape.is_compatible_with(value.shape):
                raise InvalidRequest(f"input {name!r}: expected shape {spec.shape}, got {list(value.shape)}")
            tensors[name] = tf.constant(value, spec.dtype)
        try:
            outputs = signature(**tensors)
        except tf.errors.InvalidArgumentError as error:
            raise InvalidRequest(error.message) from None
        return {name: value.numpy() for name, value in outputs.items()}


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, runner):
        self.runner = runner

    def _abort_unless_served(self, model_spec, context):
        version = model_spec.version.value if model_spec.HasField("version") else None
        if not_found := self.runner.serves(model_spec.name, version):
            context.abort(grpc.StatusCode.NOT_FOUND, not_found)

    def GetModelMetadata(self, request, context):  # noqa: N802 (the generated service's name)
        self._abort_unless_served(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:  # the one field TF Serving answers
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must be ['signature_def']")
        return self.runner.metadata_response()

    def Predict(self, request, context):  # noqa: N802 (the generated service's name)
        self._abort_unless_served(request.model_spec, context)
        try:
            inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            outputs = self.runner.predict(inputs, request.model_spec.signature_name or "serving_default")
        except (InvalidRequest, TypeError, ValueError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def start_grpc(runner, port=0):
    """Starts the gRPC service; returns (server, bound port)."""
    # TF Serving's model server takes messages up to 2^31 - 1 bytes (gRPC's default of 4 MB refuses one 12-megapixel
    # photo as a PNG): the stand-in must not refuse what the real server serves.
    # And no SO_REUSEPORT (gRPC's default): a second server on a port in use shared it with the first, each answering
    # some of the calls, instead of failing to start.
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(runner), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def _from_json(value):
    """TF Serving's JSON encoding: {"b64": ...} is bytes, lists are tensors."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _rest_inputs(body):
    if "instances" in body:
        rows = [r if isinstance(r, dict) else {"inputs": r} for r in body["instances"]]
        names = rows[0].keys() if rows else []
        return {name: np.array([_from_json(row[name]) for row in rows]) for name in names}
    if "inputs" in body and isinstance(body["inputs"], dict):
        return {name: np.array(_from_json(value)) for name, value in body["inputs"].items()}
    raise InvalidRequest('the body must hold "instances" (rows) or "inputs" (columns)')


def make_rest_handler(runner):
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _model(self, verbs):
            """(the path's verb, or None with the reply sent) for /v1/models/<name>[/versions/<v>][<verb>]."""
            match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?(/metadata|:\w+)?", self.path)
            if not match or match[3] not in verbs:
                self._reply(404, {"error": f"unknown path {self.path}"})
                return None
            if not_found := runner.serves(match[1], match[2] and int(match[2])):
                self._reply(404, {"error": not_found})
                return None
            return match[3] or "status"

        def do_GET(self):  # noqa: N802 (http.server's name)
            verb = self._model((None, "/metadata"))
            if verb:  # model status (what readiness probes ask), or the signatures
                self._reply(200, runner.metadata() if verb == "/metadata" else runner.status())

        def do_POST(self):  # noqa: N802 (http.server's name)
            if not self._model((":predict",)):
                return None
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                signature = body.get("signature_name", "serving_default")
                outputs = runner.predict(_rest_inputs(body), signature, untyped_numbers=True)
            except (InvalidRequest, ValueError, TypeError, KeyError, IndexError) as error:
                return self._reply(400, {"error": str(error)})
            if "instances" in body:
                count = len(next(iter(outputs.values())))
                rows = [{name: value[i].tolist() for name, value in outputs.items()} for i in range(count)]
                return self._reply(200, {"predictions": rows})
            return self._reply(200, {"outputs": {name: value.tolist() for name, value in outputs.items()}})

        def log_message(self, *args):
            pass

    return Handler


def start_rest(runner, port=0):
    """Starts the REST endpoint in a thread; returns (server, bound port)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_rest_handler(runner))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def main(argv):
    del argv
    from absl import flags

    values = flags.FLAGS
    try:
        saved_model = resolve_version(values.saved_model)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    runner = SavedModelRunner(saved_model, values.model_name)
    try:
        grpc_server, grpc_port = start_grpc(runner, values.grpc_port)
        _, rest_port = start_rest(runner, values.rest_port)
    except (RuntimeError, OSError) as error:  # a port in use (gRPC: "Failed to bind"; REST: EADDRINUSE)
        raise SystemExit(f"error: ports {values.grpc_port} (gRPC) and {values.rest_port} (REST): {error}") from None
    where = f"gRPC 127.0.0.1:{grpc_port}, REST 127.0.0.1:{rest_port} (loopback only)"
    print(f"serving {saved_model} as {values.model_name!r}: {where}")
    grpc_server.wait_for_termination()


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("saved_model", None, "An export (E: its highest version, as TF Serving) or a version "
                        "folder (E/<N>).", required=True)  # fmt: skip
    define_model_name_flag("The model name the server answers to.")
    flags.DEFINE_integer("grpc_port", 8500, "gRPC port (TF Serving's default).")
    flags.DEFINE_integer("rest_port", 8501, "REST port (TF Serving's default).")
    app.run(main)
