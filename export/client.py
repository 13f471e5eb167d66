r"""Clients for the served model: TF Serving's REST and gRPC Predict APIs.

    python -m export.client --image=x.jpg [--protocol=grpc|rest] [--server=host:port] [--box=x0,y0,x1,y1]

--server defaults to TF Serving's port for the protocol on this machine (localhost:8500 gRPC, localhost:8501 REST).

Both clients send encoded images (any JPEG or PNG; decoding and cropping happen in the served graph) and return a
dict of numpy arrays keyed like the SavedModel's outputs (see `export.serving`). With a box, focal length or pelvis
depth they call the `with_box` signature, else `serving_default`.
"""

import base64
import json
import math
import sys
import urllib.error
import urllib.request

import numpy as np

from export.image_formats import JPEG_MAGIC, PNG_MAGIC


class ServingError(RuntimeError):
    """The server refused the request; the message is the server's."""


def parse_box(text):
    """A --box flag's value as [x0, y0, x1, y1], or None (the whole image); ValueError unless four finite numbers."""
    if text is None:
        return None
    box = [float(v) for v in text.split(",")]
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"expected four finite numbers, got {text!r}")
    return box


def is_box(text):
    """The absl validator of --box (parse_box accepts it)."""
    try:
        parse_box(text)
    except ValueError:
        return False
    return True


def read_image_file(path):
    """The encoded bytes of an image file; OSError naming the path if it cannot be read or is empty (the server
    would refuse empty bytes with a less helpful message)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise OSError(f"{path}: {error.strerror or error}") from None
    if not data:
        raise OSError(f"{path}: empty file; expected a JPEG or PNG image")
    if not data.startswith((JPEG_MAGIC, PNG_MAGIC)):  # the server would refuse it without the name
        raise OSError(f"{path}: not a JPEG or PNG file (starts with {data[:4]!r}); the served model decodes only "
                      "those two: re-encode it, e.g. with OpenCV's cv2.imwrite('x.png', cv2.imread(path))")  # fmt: skip
    return data


def _signature_inputs(images, box, focal_length, pelvis_depth):
    count = len(images)
    if box is None and focal_length is None and pelvis_depth is None:
        return "serving_default", {}
    box = np.zeros((count, 4), np.float32) if box is None else np.asarray(box, np.float32).reshape(count, 4)
    focal = np.broadcast_to(np.asarray(focal_length or 0.0, np.float32), (count,))
    pelvis = np.broadcast_to(np.asarray(pelvis_depth or 0.0, np.float32), (count,))
    return "with_box", {"box": box, "focal_length": focal, "pelvis_depth": pelvis}


def _error_message(body):
    """TF Serving's {"error": ...} from an HTTP error's body; what else answered (a proxy's or load balancer's page in
    front of the server) as text, shortened."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:
        return parsed["error"]
    return text if len(text) <= 500 else text[:500] + " ..."


class RestClient:
    """`POST /v1/models/<name>:predict` with TF Serving's row format; images travel as {"b64": ...}."""

    def __init__(self, server="localhost:8501", model_name="mtha", timeout=60.0):
        self.url = f"http://{server}/v1/models/{model_name}:predict"
        self.timeout = timeout

    def predict(self, images, box=None, focal_length=None, pelvis_depth=None):
        signature, extra = _signature_inputs(images, box, focal_length, pelvis_depth)
        instances = []
        for i, image in enumerate(images):
            row = {"image_bytes": {"b64": base64.b64encode(image).decode("ascii")}}
            row.update({name: value[i].tolist() for name, value in extra.items()})
            instances.append(row)
        body = json.dumps({"signature_name": signature, "instances": instances}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                rows = json.loads(response.read())["predictions"]
        except urllib.error.HTTPError as error:
            raise ServingError(f"HTTP {error.code}: {_error_message(error.read())}") from None
        except urllib.error.URLError as error:  # nothing answered: refused, unknown host, timed out
            raise ServingError(f"{self.url}: {error.reason}") from None
        return {name: np.array([row[name] for row in rows]) for name in rows[0]}


class GrpcClient:
    """`tensorflow.serving.PredictionService/Predict` with the stubs of `tensorflow-serving-api`."""

    def __init__(self, server="localhost:8500", model_name="mtha", timeout=60.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        # The answer carries full-resolution maps (12 bytes per pixel and image with every task): no 4 MB default,
        # gRPC's own 2 GB limit applies, as in TF Serving's server.
        self.channel = grpc.insecure_channel(server, options=[("grpc.max_receive_message_length", -1)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.timeout = model_name, timeout

    def predict(self, images, box=None, focal_length=None, pelvis_depth=None):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        signature, extra = _signature_inputs(images, box, focal_length, pelvis_depth)
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = self.model_name, signature
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
        for name, value in extra.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(f"{error.code().name}: {error.details()}") from None
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self):
        self.channel.close()


def client_for(protocol, server=None, model_name="mtha"):
    """A client of `protocol` ("grpc" or "rest") for `server` (host:port), by default TF Serving's port for that
    protocol on this machine: 8500 for gRPC, 8501 for REST."""
    kind = GrpcClient if protocol == "grpc" else RestClient
    return kind(model_name=model_name) if server is None else kind(server, model_name)


def summary(outputs):
    """JSON-ready: joints and their scores in full, maps as their shapes (they can be large)."""
    keep = ("joints2d", "joints2d_score", "joints3d", "image_size")
    # Rounded as float64: float32 values (gRPC) would print as 1.5399999618530273.
    # In a fixed order: gRPC's response map and REST's rows list the outputs in different orders.
    result = {name: (np.round(outputs[name].astype(np.float64), 2) if outputs[name].dtype.kind == "f"
                     else outputs[name]).tolist() for name in keep if name in outputs}  # fmt: skip
    result.update({name: {"shape": list(outputs[name].shape)} for name in sorted(outputs) if name not in keep})
    return result


def main(argv):
    del argv
    from absl import flags

    values = flags.FLAGS
    try:
        images = [read_image_file(path) for path in values.image]
        box = parse_box(values.box)  # one box for every image
        client = client_for(values.protocol, values.server, values.model_name)
        outputs = client.predict(images, box=box and [box] * len(images))
    except (OSError, ServingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary(outputs)))
    return 0


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string(
        "server", None, "host:port; by default localhost with TF Serving's port for --protocol (8500 gRPC, 8501 REST)."
    )
    flags.DEFINE_enum("protocol", "grpc", ["grpc", "rest"], "Which TF Serving API to call.")
    flags.DEFINE_multi_string("image", None, "JPEG or PNG file(s).", required=True)
    flags.DEFINE_string("box", None, "x0,y0,x1,y1 person box in pixels (default: the whole image).")
    flags.register_validator("box", is_box, "expected four finite numbers, x0,y0,x1,y1")
    flags.DEFINE_string("model_name", "mtha", "The served model's name.")
    app.run(main)
