"""The SavedModel for TF Serving: round trip in a fresh process, layout, bad input, clients, warmup, predict CLI."""

import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import cv2
import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from export.client import GrpcClient, RestClient, ServingError, client_for, summary
from export.fold_batch_norm import foldable_pairs
from export.local_server import SavedModelRunner, start_grpc, start_rest
from export.saved_model import WARMUP_FILE, export_model, resolve_version
from export.serving import ServingModule, decode_image
from mtha_tf import tasks
from mtha_tf.model import build_model

SIZE = 64


def _png(height, width, seed=0):
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (width, height))
    return cv2.imencode(".png", image)[1].tobytes()


def _jpeg(height, width, seed=1):
    image = cv2.imdecode(np.frombuffer(_png(height, width, seed), np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".jpg", image)[1].tobytes()


def _with_exif_orientation(jpeg, orientation):
    """The JPEG with an EXIF block (APP1, big-endian TIFF, one IFD0 entry) whose Orientation tag is `orientation`,
    what a phone writes for a photo taken sideways (6: the viewer turns the stored pixels 90 degrees clockwise)."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">HHHIHHI", 1, 0x0112, 3, 1, orientation, 0, 0)
    exif = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 2-stack, 4-task tiny model with non-trivial BatchNorm statistics, exported as version 1."""
    keras.utils.set_random_seed(0)
    model = build_model(tasks.TASKS, num_stacks=2, features=32, input_size=SIZE)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.random.default_rng(1).normal(0, 0.1, layer.moving_mean.shape))
    export_dir = tmp_path_factory.mktemp("export")
    path = export_model(model, tasks.TASKS, SIZE, str(export_dir))
    return model, path


@pytest.fixture(scope="module")
def servers(exported):
    runner = SavedModelRunner(exported[1])
    grpc_server, grpc_port = start_grpc(runner)
    rest_server, rest_port = start_rest(runner)
    yield runner, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}"
    grpc_server.stop(0)
    rest_server.shutdown()


FRESH_PROCESS = """
import sys, numpy as np, tensorflow as tf
path, image_path, out = sys.argv[1:]
model = tf.saved_model.load(path)
image = tf.constant([open(image_path, "rb").read()])
box = tf.constant([[10.0, 4.0, 70.0, 60.0]])
raw = model.signatures["heatmaps"](image_bytes=image, box=box)
decoded = model.signatures["with_box"](image_bytes=image, box=box, focal_length=tf.zeros([1]),
                                       pelvis_depth=tf.zeros([1]))
project = [m for m in sys.modules if m.split(".")[0] in ("mtha_tf", "export", "data_prep")]
assert not project, project
np.savez(out, **{"raw_" + k: v.numpy() for k, v in raw.items()}, **{k: v.numpy() for k, v in decoded.items()})
"""


def test_a_fresh_process_without_the_project_reproduces_the_in_memory_model(exported, tmp_path):
    model, path = exported
    image_path = tmp_path / "image.png"
    image_path.write_bytes(_png(72, 90))
    out = tmp_path / "out.npz"
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, path, str(image_path), str(out)], check=True, cwd=tmp_path)
    reloaded = dict(np.load(out))

    module = ServingModule(model, tasks.TASKS, SIZE)
    box = tf.constant([[10.0, 4.0, 70.0, 60.0]])
    crops, _, _ = module._crop_all(decode_image, tf.constant([image_path.read_bytes()]), box)
    in_memory = model({"image": crops}, training=False)
    for task in tasks.TASKS:
        np.testing.assert_allclose(reloaded[f"raw_{task}"], in_memory[task].numpy(), atol=1e-4, err_msg=task)
    decoded = module.signatures()["with_box"](tf.constant([image_path.read_bytes()]), box, tf.zeros([1]), tf.zeros([1]))
    for name, value in decoded.items():
        np.testing.assert_allclose(reloaded[name], value.numpy(), atol=1e-3, err_msg=name)
    assert reloaded["segmentation"].shape == (1, 72, 90) and reloaded["image_size"].tolist() == [[72, 90]]


def test_an_export_dir_that_cannot_be_a_folder_or_an_odd_model_name_is_refused(exported, tmp_path, capsys):
    taken = tmp_path / "models"
    taken.write_text("a file, not a folder")
    with pytest.raises(NotADirectoryError, match=f"--export_dir={taken}: cannot be made a folder"):
        export_model(exported[0], tasks.TASKS, SIZE, str(taken))
    assert taken.read_text() == "a file, not a folder"
    base = os.path.dirname(exported[1])
    second = export_model(exported[0], ("pose2d",), SIZE, base, model_name="other")  # an existing base path
    assert second == os.path.join(base, "2") and 'name: "mtha"' in open(os.path.join(base, "models.config")).read()
    assert "serves no model named 'other'; it is left as it is" in capsys.readouterr().err
    shutil.rmtree(second)  # the other tests serve the base path's highest version, 1
    commands = {"export.saved_model": [f"--workdir={tmp_path}", f"--export_dir={tmp_path}"],
                "export.local_server": [f"--saved_model={tmp_path}"]}  # fmt: skip
    for module, arguments in commands.items():  # the name goes into URLs and the base path
        odd = subprocess.run([sys.executable, "-m", module, *arguments, "--model_name=my model"], capture_output=True,
                             text=True)  # fmt: skip
        assert odd.returncode == 1 and "--model_name=my model: expected letters, digits" in odd.stderr, odd.stderr


def test_the_layout_signatures_and_weights(exported):
    model, path = exported
    shown = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", path,
                            "--all"], check=True, capture_output=True, text=True).stdout  # fmt: skip
    for signature in ("serving_default", "with_box", "with_box_uint8", "heatmaps"):
        assert f"signature_def['{signature}']" in shown
    assert "image_bytes" in shown and "joints3d" in shown and "pose2d_stack1" not in shown, "last stack only"
    weights = tf.train.load_checkpoint(f"{path}/variables/variables")
    shapes = weights.get_variable_to_shape_map()
    stored = sum(int(np.prod(shape)) for name, shape in shapes.items() if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    # Each weight once: the trained model's, less the batch norms folded into convolutions (their 4 vectors become
    # the convolution's bias, which the model's convolutions already have).
    folded_norms = [model.get_layer(name) for name in foldable_pairs(model)]
    assert folded_norms, "the export folds batch norms"
    assert stored == model.count_params() - sum(norm.count_params() for norm in folded_norms)
    log = tf.data.TFRecordDataset(f"{path}/{WARMUP_FILE}")
    from tensorflow_serving.apis import prediction_log_pb2

    requests = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request for r in log]
    assert [r.model_spec.signature_name for r in requests] == ["serving_default"] * 2
    runner = SavedModelRunner(path)
    for request in requests:
        outputs = runner.predict({k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        assert outputs["joints2d"].shape[1:] == (16, 2)


def test_outputs_are_in_each_images_frame(servers):
    runner, _, _ = servers
    outputs = runner.predict({"image_bytes": np.array([_png(80, 100), _jpeg(50, 40)], object)})
    assert outputs["image_size"].tolist() == [[80, 100], [50, 40]]
    assert outputs["segmentation"].shape == outputs["depth"].shape == (2, 80, 100)
    assert not outputs["segmentation"][1, 50:].any() and not outputs["depth_bins"][1, :, 40:].any()
    depth, bins = outputs["depth"], outputs["depth_bins"]
    np.testing.assert_allclose(depth[bins > 0], (bins[bins > 0] - 10.5) * 0.045, atol=1e-6)
    assert outputs["joints3d"].shape == (2, 16, 3) and np.all(outputs["joints3d"][:, 6] == 0), "pelvis-relative"
    uint8 = runner.predict({"images": np.zeros((1, 30, 20, 3), np.uint8), "box": np.zeros((1, 4), np.float32),
                            "focal_length": np.zeros(1, np.float32), "pelvis_depth": np.zeros(1, np.float32)},
                           "with_box_uint8")  # fmt: skip
    assert uint8["segmentation"].shape == (1, 30, 20)


def _truncated_jpeg():
    data = _jpeg(64, 64)
    return data[: len(data) // 2]


def _huge_png_header():
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _with_box(box, focal_length=0.0, pelvis_depth=0.0):
    """The inputs of a `with_box` request for one 40 x 40 image."""
    return {"image_bytes": [_png(40, 40)], "box": [box], "focal_length": [focal_length], "pelvis_depth": [pelvis_depth]}


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"image_bytes": [b""]}, "not a JPEG or PNG"),
        ({"image_bytes": [_truncated_jpeg()]}, "JPEG"),
        ({"image_bytes": [_huge_png_header()]}, "20000"),
        ({"image_bytes": [1.5]}, "expected string"),
        (_with_box([100.0, 100.0, 200.0, 200.0]), "overlap the image"),
        # NaN compares false, so these used to pass as "the whole image" and "the default camera" unnoticed.
        (_with_box([np.nan, 0.0, 30.0, 30.0]), "must be finite"),
        (_with_box([0.0, 0.0, 0.0, 0.0], focal_length=np.nan, pelvis_depth=-7.0), "must be finite and >= 0"),
    ],
    ids=["empty", "truncated-jpeg", "20000x20000-png", "wrong-dtype", "box-outside", "nan-box", "bad-camera"],
)
def test_bad_input_is_invalid_argument_with_the_reason(servers, inputs, message):
    _, grpc_address, rest_address = servers
    client = GrpcClient(grpc_address, timeout=60)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mtha"
    request.model_spec.signature_name = "with_box" if "box" in inputs else "serving_default"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with pytest.raises(grpc.RpcError) as error:
        client.stub.Predict(request, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()


def test_random_bytes_are_refused_and_the_server_keeps_serving(servers):
    _, grpc_address, rest_address = servers
    client, rng = GrpcClient(grpc_address, timeout=60), np.random.default_rng(0)
    for i in range(200):
        garbage = rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8).tobytes()
        if i % 50 == 0:
            garbage = b"\x89PNG\r\n\x1a\n" + garbage  # a PNG signature over garbage
        with pytest.raises(ServingError, match="INVALID_ARGUMENT"):
            client.predict([garbage])
    with pytest.raises(ServingError, match="(?s)HTTP 400: .*not a JPEG or PNG"):
        RestClient(rest_address).predict([b"not an image"])
    assert client.predict([_png(32, 32)])["joints2d"].shape == (1, 16, 2)


def test_the_local_server_answers_status_and_metadata_and_only_its_version(servers):
    """As TF Serving: GET /v1/models/<name> (readiness probes), .../metadata and gRPC's GetModelMetadata; another
    version is NOT_FOUND."""
    _, grpc_address, rest_address = servers
    base = f"http://{rest_address}/v1/models/mtha"
    for path in ("", "/versions/1"):
        with urllib.request.urlopen(base + path, timeout=60) as answer:
            [status] = json.load(answer)["model_version_status"]
        assert status["version"] == "1" and status["state"] == "AVAILABLE" and status["status"]["error_code"] == "OK"
    with urllib.request.urlopen(base + "/metadata", timeout=60) as answer:
        metadata = json.load(answer)
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "with_box", "with_box_uint8", "heatmaps"} <= set(signatures)
    assert signatures["serving_default"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert metadata["model_spec"] == {"name": "mtha", "signature_name": "", "version": "1"}
    for path in ("/versions/2", "/versions/2:predict"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(base + path, b"{}" if ":" in path else None), timeout=60)
        assert refused.value.code == 404 and "Specific(mtha, 2)" in refused.value.read().decode()
    client = GrpcClient(grpc_address, timeout=60)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mtha"
    request.model_spec.version.value = 2
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([_png(32, 32)]))
    with pytest.raises(grpc.RpcError) as refused:
        client.stub.Predict(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND and "Specific(mtha, 2)" in refused.value.details()
    asked = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    asked.model_spec.name = "mtha"
    answer = client.stub.GetModelMetadata(asked, timeout=60)
    over_grpc = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(over_grpc) and answer.model_spec.version.value == 1
    assert set(over_grpc.signature_def) == set(signatures)


def test_rest_and_grpc_clients_return_what_the_saved_model_computes(servers):
    runner, grpc_address, rest_address = servers
    images = [_png(60, 80), _jpeg(64, 64)]
    direct = runner.predict({"image_bytes": np.array(images, object)})
    box = [[0.0, 0.0, 50.0, 50.0]] * 2
    options = {"box": np.array(box, np.float32), "focal_length": np.full(2, 500, np.float32),
               "pelvis_depth": np.full(2, 5, np.float32)}  # fmt: skip
    direct_box = runner.predict({"image_bytes": np.array(images, object), **options}, "with_box")
    printed = []
    for client in (GrpcClient(grpc_address), RestClient(rest_address)):
        outputs = client.predict(images)
        for name, value in direct.items():
            np.testing.assert_allclose(outputs[name], value, atol=1e-5, err_msg=f"{type(client).__name__} {name}")
        printed.append(list(summary(outputs)))
        outputs = client.predict(images, box=box, focal_length=500.0, pelvis_depth=5.0)
        np.testing.assert_allclose(outputs["joints3d"], direct_box["joints3d"], atol=1e-3)
    assert printed[0] == printed[1], "the command prints the outputs in one order over either protocol"
    with pytest.raises(RuntimeError, match="Failed to bind"):  # not SO_REUSEPORT: a port in use is not shared
        start_grpc(runner, int(grpc_address.rsplit(":", 1)[1]))
    # A photo's PNG and its full-resolution maps are over gRPC's 4 MB default; TF Serving takes up to 2 GB.
    photo = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (1500, 1200, 3), np.uint8))[1].tobytes()
    assert len(photo) > 4 << 20
    for client in (GrpcClient(grpc_address), RestClient(rest_address)):
        assert client.predict([photo])["segmentation"].shape == (1, 1500, 1200), type(client).__name__


def test_client_and_predict_commands(exported, servers, tmp_path, real_fixtures):
    _, grpc_address, _ = servers
    image = real_fixtures / "surreal" / "demo_input1.png"
    shown = subprocess.run([sys.executable, "-m", "export.client", f"--server={grpc_address}", f"--image={image}"],
                           check=True, capture_output=True, text=True).stdout  # fmt: skip
    summary = json.loads(shown.strip().splitlines()[-1])
    assert np.array(summary["joints2d"]).shape == (1, 16, 2) and summary["segmentation"]["shape"] == [1, 256, 256]
    scores = np.array(summary["joints2d_score"])
    np.testing.assert_array_equal(scores, np.round(scores, 2))  # printed to 2 decimals, not as float32's digits
    out = tmp_path / "viz.png"
    subprocess.run([sys.executable, "-m", "mtha_tf.predict", f"--saved_model={exported[1]}", f"--image={image}",
                    f"--out={out}"], check=True, capture_output=True)  # fmt: skip
    picture = cv2.imread(str(out))
    assert picture.shape == (256, 4 * 256, 3), "image + skeleton, parts, depth, 3D side view"
    # A photo stored 48 x 80 that viewers turn upright (EXIF orientation 6) is predicted and drawn as seen, 80 x 48.
    sideways = tmp_path / "sideways.jpg"
    sideways.write_bytes(_with_exif_orientation(_jpeg(48, 80), 6))
    assert cv2.imread(str(sideways)).shape == (80, 48, 3)
    subprocess.run([sys.executable, "-m", "mtha_tf.predict", f"--saved_model={exported[1]}", f"--image={sideways}",
                    f"--out={out}"], check=True, capture_output=True)  # fmt: skip
    assert cv2.imread(str(out)).shape[:2] == (80, 4 * 48)
    off_image = subprocess.run([sys.executable, "-m", "mtha_tf.predict", f"--saved_model={exported[1]}",
                                f"--image={image}", "--box=5000,5000,6000,6000", f"--out={tmp_path / 'off.png'}"],
                               capture_output=True, text=True)  # fmt: skip
    assert off_image.returncode == 1 and "the model refused it: assertion failed: [box]" in off_image.stderr
    assert "overlap the image" in off_image.stderr and not (tmp_path / "off.png").exists()


def test_a_base_folder_resolves_to_its_highest_saved_model_version(exported, tmp_path):
    """As TF Serving serves a base path: predict and the local server take `W/export` (a training run writes
    `W/export/<epochs>`), a version folder as given; folders that hold no SavedModel are passed over."""
    (tmp_path / "1").symlink_to(exported[1], target_is_directory=True)
    (tmp_path / "7").mkdir()  # an unfinished copy, say: no saved_model.pb
    assert resolve_version(str(tmp_path)) == str(tmp_path / "1")
    assert resolve_version(exported[1]) == exported[1]
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / '7'}: no SavedModel; expected an export's base folder"):
        resolve_version(str(tmp_path / "7"))


def test_the_client_names_what_it_could_not_do(tmp_path):
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "export.client", f"--image={image}", "--protocol=rest"]
    refused = subprocess.run([*command, f"--server=127.0.0.1:{port}"], capture_output=True, text=True)
    assert refused.returncode == 1
    assert f"error: http://127.0.0.1:{port}/v1/models/mtha:predict: " in refused.stderr, refused.stderr[-2000:]
    for box in ("10,20,30", "nan,0,10,10"):
        bad_box = subprocess.run([*command, f"--box={box}"], capture_output=True, text=True)
        assert bad_box.returncode != 0 and "--box" in bad_box.stderr, bad_box.stderr
        assert "expected four finite numbers" in bad_box.stderr
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    bitmap = tmp_path / "person.bmp"  # decodable by OpenCV, not by the served graph
    cv2.imwrite(str(bitmap), np.zeros((8, 8, 3), np.uint8))
    for path, reason in [(tmp_path / "missing.jpg", "No such file or directory"), (empty, "empty file"),
                         (bitmap, "not a JPEG or PNG file (starts with b'BM")]:  # fmt: skip
        unreadable = subprocess.run([*command[:3], f"--image={path}", "--protocol=rest"], capture_output=True,
                                    text=True)  # fmt: skip
        assert unreadable.returncode == 1 and f"error: {path}: {reason}" in unreadable.stderr, unreadable.stderr
    predict = [sys.executable, "-m", "mtha_tf.predict", f"--saved_model={tmp_path}", f"--out={tmp_path / 'p.png'}"]
    missing = subprocess.run([*predict, f"--image={tmp_path / 'missing.jpg'}"], capture_output=True, text=True)
    assert missing.returncode == 1 and "missing.jpg: No such file or directory" in missing.stderr, missing.stderr
    not_an_export = subprocess.run([*predict, f"--image={image}"], capture_output=True, text=True)
    assert not_an_export.returncode == 1 and f"error: {tmp_path}: no SavedModel" in not_an_export.stderr
    assert not (tmp_path / "p.png").exists()


class _ProxyErrorPage(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.send_response(502)
        self.end_headers()
        self.wfile.write(b"<html><body>Bad gateway: the upstream server is not answering</body></html>" * 20)

    def log_message(self, *args):
        pass


def test_an_error_page_in_front_of_the_server_is_named_not_a_json_traceback():
    server = http.server.HTTPServer(("127.0.0.1", 0), _ProxyErrorPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RestClient(f"127.0.0.1:{server.server_address[1]}")
        with pytest.raises(ServingError, match=r"^HTTP 502: <html><body>Bad gateway: the upstream .* \.\.\.$"):
            client.predict([_png(8, 8)])
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_calls_tf_servings_port_for_its_protocol_by_default():
    assert client_for("rest").url == "http://localhost:8501/v1/models/mtha:predict"  # not gRPC's 8500
    assert client_for("rest", "serving:9000", "people").url == "http://serving:9000/v1/models/people:predict"
