"""The SavedModel as TF Serving and its clients see it, compared with the in-memory model on the same images.

Loading paths: `tf.saved_model.load` signatures; the TF1 session path by the signature's tensor names (how the
model server runs it); `saved_model_cli show/run`; and an in-process gRPC PredictionService answering
`predict_pb2.PredictRequest`s built with tensorflow-serving-api.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from sat_tf.config import load_config
from sat_tf.images.tf_decode import decode_images
from sat_tf.text.vocabulary import Vocabulary
from tests.export.conftest import IMAGE_SIZE, MAX_LENGTH
from tests.export.prediction_service import start_server

OUTPUTS = {"captions": tf.string, "tokens": tf.int32, "lengths": tf.int32, "scores": tf.float32,
           "log_probs": tf.float32, "alpha": tf.float32}
IMAGE_OUTPUTS = {**OUTPUTS, "error": tf.string}  # the image signatures add a per-row error
L = 36  # 6 x 6 grid at 96 px


def _reference(source, annotations, beam_size: int) -> dict[str, np.ndarray]:
    """The in-memory model's decoding, with the same rules as the export (best beam, captions via Vocabulary)."""
    out = source.captioner.generate(annotations, beam_size=beam_size, max_length=MAX_LENGTH + 1)
    out = {name: np.asarray(value) for name, value in out.items()}
    out["captions"] = np.array([c.encode() for c in source.vocabulary.decode(out["tokens"])], dtype=object)
    return out


@pytest.fixture(scope="module")
def annotations(source, images):
    return source.encoder(decode_images(tf.constant(images), IMAGE_SIZE))  # (B, L, D)


def _assert_same(got: dict, want: dict):
    for name in OUTPUTS:
        got_value, want_value = np.asarray(got[name]), np.asarray(want[name])
        assert got_value.shape == want_value.shape, name
        if want_value.dtype == object:
            assert list(got_value) == list(want_value), name
        elif want_value.dtype.kind in "iu":
            np.testing.assert_array_equal(got_value, want_value, err_msg=name)
        else:
            np.testing.assert_allclose(got_value, want_value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_layout_tag_signatures_and_assets(saved_model_dir, source):
    assert os.path.basename(saved_model_dir) == "1" and os.path.basename(os.path.dirname(saved_model_dir)) == \
        "captioner"
    assert os.stat(saved_model_dir).st_mode & 0o055 == 0o055  # readable by a server running as another user
    assert sorted(os.listdir(os.path.dirname(saved_model_dir))) == ["1"]  # no staging leftovers
    assert sorted(os.listdir(os.path.join(saved_model_dir, "assets"))) == ["config.json", "vocab.txt"]
    assert Vocabulary.load(os.path.join(saved_model_dir, "assets", "vocab.txt")) == source.vocabulary
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    (meta_graph,) = proto.meta_graphs
    assert list(meta_graph.meta_info_def.tags) == ["serve"]
    signatures = meta_graph.signature_def
    assert set(signatures) >= {"serving_default", "greedy", "from_features"}
    for key, input_name, input_dtype in [("serving_default", "image_bytes", tf.string),
                                         ("greedy", "image_bytes", tf.string),
                                         ("from_features", "annotations", tf.float32)]:
        signature = signatures[key]
        assert signature.method_name == "tensorflow/serving/predict"
        assert list(signature.inputs) == [input_name]
        assert signature.inputs[input_name].dtype == input_dtype.as_datatype_enum
        assert {name: output.dtype for name, output in signature.outputs.items()} == {
            name: dtype.as_datatype_enum for name, dtype in (OUTPUTS if key == "from_features"
                                                             else IMAGE_OUTPUTS).items()}
    # No tf-text ops: the stock tensorflow/serving image (which links them anyway) needs nothing extra.
    ops = {node.op for f in meta_graph.graph_def.library.function for node in f.node_def}
    assert not any(op.startswith(("Normalize", "CaseFold", "Wordpiece")) for op in ops), ops


def test_config_json_in_assets_rebuilds_the_model(saved_model_dir, source):
    path = os.path.join(saved_model_dir, "assets", "config.json")
    configs = load_config(path)
    assert configs["model"] == source.model_config and configs["data"] == source.data_config
    export = json.load(open(path))["export"]
    assert export["beam_size"] == 3 and export["max_tokens"] == MAX_LENGTH + 1
    assert export["encoder"]["grid"] == [6, 6] and export["vocabulary"]["sha256"] == source.vocabulary.checksum()
    assert export["signatures"]["serving_default"]["outputs"] == [*OUTPUTS, "error"]
    assert export["signatures"]["from_features"]["outputs"] == list(OUTPUTS)


def test_signatures_equal_the_in_memory_model(served, source, images, captions, annotations):
    beam = served.signatures["serving_default"](image_bytes=tf.constant(images))
    _assert_same(beam, _reference(source, annotations, 3))
    greedy = served.signatures["greedy"](image_bytes=tf.constant(images))
    _assert_same(greedy, _reference(source, annotations, 1))
    assert list(beam["error"].numpy()) == list(greedy["error"].numpy()) == [b""] * len(images)
    features = served.signatures["from_features"](annotations=annotations)
    _assert_same(features, _reference(source, annotations, 3))
    # The in-graph decoder sees the Pillow pipeline's pixels, so the model says what it learnt on those features.
    assert [c.decode() for c in greedy["captions"].numpy()] == captions
    assert beam["alpha"].shape == (len(images), MAX_LENGTH + 1, L)
    sums = beam["alpha"].numpy().sum(-1)
    for i, n in enumerate(beam["lengths"].numpy()):
        np.testing.assert_allclose(sums[i, :n], 1.0, atol=1e-5)  # attention sums to 1 over L per real step
        np.testing.assert_array_equal(sums[i, n:], 0.0)


def test_any_batch_size_including_one(served, images):
    both = served.signatures["serving_default"](image_bytes=tf.constant(images[:2]))
    for i in range(2):
        one = served.signatures["serving_default"](image_bytes=tf.constant(images[i:i + 1]))
        np.testing.assert_array_equal(one["tokens"].numpy()[0], both["tokens"].numpy()[i])


def test_bad_bytes_fail_only_their_row(served, images):
    """A bad image is an error string on its own row, never a failed request (tests/export/test_row_errors.py has
    every kind of bad image)."""
    out = served.signatures["serving_default"](image_bytes=tf.constant([images[0], b"GET / HTTP/1.1"]))
    assert list(out["error"].numpy()) == [b"", b"image 1: not an image (JPEG, PNG, GIF, BMP or WebP expected)"]
    assert out["captions"].numpy()[0] and out["captions"].numpy()[1] == b""
    out = served.signatures["greedy"](image_bytes=tf.constant([b""]))
    assert list(out["error"].numpy()) == [b"image 0: empty (0 bytes)"] and list(out["lengths"].numpy()) == [0]


def test_tf1_session_by_tensor_names(saved_model_dir, served, images):
    """How the model server runs it: a TF1 session, tag `serve`, the signature's input and output tensor names."""
    expected = served.signatures["serving_default"](image_bytes=tf.constant(images))
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_model_dir)
        signature = meta_graph.signature_def["serving_default"]
        fetches = {name: info.name for name, info in signature.outputs.items()}
        got = session.run(fetches, feed_dict={signature.inputs["image_bytes"].name: np.array(images, dtype=object)})
        # The per-row decoding's tf.data ops run in a TF1 session too: a bad row fails alone.
        mixed = session.run(fetches, feed_dict={signature.inputs["image_bytes"].name: np.array(
            [images[0], images[1][:300], b""], dtype=object)})
    _assert_same(got, {name: value.numpy() for name, value in expected.items()})
    assert list(got["error"]) == [b""] * len(images)
    assert list(mixed["error"]) == [b"", b"image 1: truncated JPEG", b"image 2: empty (0 bytes)"]
    assert list(mixed["captions"]) == [got["captions"][0], b"", b""]


def test_grpc_prediction_service(saved_model_dir, served, images, annotations):
    server, port = start_server("captioner", saved_model_dir)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "captioner"
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
            response = stub.Predict(request, timeout=120)
            got = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
            expected = served.signatures["serving_default"](image_bytes=tf.constant(images))
            _assert_same(got, {name: value.numpy() for name, value in expected.items()})
            assert response.model_spec.signature_name == "serving_default"

            request = predict_pb2.PredictRequest()
            request.model_spec.name = "captioner"
            request.model_spec.signature_name = "from_features"
            request.inputs["annotations"].CopyFrom(tf.make_tensor_proto(annotations.numpy()))
            request.output_filter.extend(["captions", "scores"])
            response = stub.Predict(request, timeout=120)
            assert set(response.outputs) == {"captions", "scores"}
            assert list(tf.make_ndarray(response.outputs["captions"])) == list(expected["captions"].numpy())

            # A bad image in the batch: the request succeeds, that row carries the error, the others their captions.
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "captioner"
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([images[0], b"\x00" * 20], dtype=tf.string))
            response = stub.Predict(request, timeout=120)
            assert list(tf.make_ndarray(response.outputs["error"])) == [
                b"", b"image 1: not an image (JPEG, PNG, GIF, BMP or WebP expected)"]
            assert list(tf.make_ndarray(response.outputs["captions"])) == [expected["captions"].numpy()[0], b""]
            assert list(tf.make_ndarray(response.outputs["lengths"]))[1] == 0
    finally:
        server.stop(0)


def _saved_model_cli(*args: str) -> str:
    command = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout


def test_saved_model_cli_run(saved_model_dir, served, images, tmp_path):
    # PNG and JPEG bytes end in non-zero bytes, so a fixed-width numpy bytes array holds them exactly.
    inputs = tmp_path / "images.npy"
    np.save(inputs, np.array(images[:3], dtype=bytes))
    out_dir = tmp_path / "out"
    _saved_model_cli("run", "--dir", saved_model_dir, "--tag_set", "serve", "--signature_def", "serving_default",
                     "--inputs", f"image_bytes={inputs}", "--outdir", str(out_dir))
    expected = served.signatures["serving_default"](image_bytes=tf.constant(images[:3]))
    np.testing.assert_array_equal(np.load(out_dir / "tokens.npy"), expected["tokens"].numpy())
    assert list(np.load(out_dir / "captions.npy", allow_pickle=True)) == list(expected["captions"].numpy())


@pytest.mark.slow
def test_saved_model_cli_show(saved_model_dir):
    shown = _saved_model_cli("show", "--dir", saved_model_dir, "--all")
    for text in ("signature_def['serving_default']", "signature_def['greedy']", "signature_def['from_features']",
                 "image_bytes", "captions", "Method name is: tensorflow/serving/predict"):
        assert text in shown, text


def test_warmup_requests_are_valid_predict_requests(saved_model_dir):
    """TF Serving replays assets.extra/tf_serving_warmup_requests at load; each must be a request it can run."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(saved_model_dir, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in tf.data.TFRecordDataset(path)]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == ["serving_default", "greedy"]
    server, port = start_server("captioner", saved_model_dir)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for log in logs:  # a good image, and one cut short that warms up the row-by-row decoding
                response = stub.Predict(log.predict_log.request, timeout=120)
                assert tf.make_ndarray(response.outputs["tokens"]).shape == (2, MAX_LENGTH + 1)
                assert list(tf.make_ndarray(response.outputs["error"])) == [b"", b"image 1: truncated PNG"]
    finally:
        server.stop(0)


def test_existing_version_is_not_overwritten(source, saved_model_dir):
    from sat_tf.export.saved_model import export_saved_model

    with pytest.raises(FileExistsError, match="another --version"):
        export_saved_model(source, os.path.dirname(os.path.dirname(saved_model_dir)), name="captioner", version=1)


def test_every_weight_is_stored_once(saved_model_dir, source):
    """keras#23553: tracking the Keras models in the ExportArchive would write each weight twice."""
    stored = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(
        os.path.join(saved_model_dir, "variables", "variables")) if "OBJECT_GRAPH" not in name)
    used = source.encoder.count_params() + sum(int(np.prod(v.shape)) for v in source.captioner.trainable_weights)
    assert used <= stored <= used + 16, (stored, used)
