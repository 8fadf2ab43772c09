"""A local stand-in for TF Serving's gRPC PredictionService, for tests (the model server binary is not available).

It does what the model server does with a SavedModel (TF Serving's documented behaviour): loads it by tag `serve`
into a TF1 session, looks up the requested signature (default `serving_default`) and checks its method name is
`tensorflow/serving/predict`, feeds the request's TensorProtos to the signature's input tensor names, fetches the
output tensor names (honouring `output_filter`) and answers with TensorProtos; op errors come back as the gRPC status
of the same code (InvalidArgumentError -> INVALID_ARGUMENT) with the op's message.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

_CODES = {tf.errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
          tf.errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
          tf.errors.NotFoundError: grpc.StatusCode.NOT_FOUND}


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Serves one SavedModel version directory under `model_name`."""

    def __init__(self, model_name: str, export_dir: str):
        import tensorflow_text  # noqa: F401  (the stock model server links the tf-text ops)

        self.model_name = model_name
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], export_dir)
        self.signatures = dict(meta_graph.signature_def)

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        if request.model_spec.name != self.model_name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request.model_spec.name}")
        key = request.model_spec.signature_name or "serving_default"
        if key not in self.signatures:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature key \"{key}\" not found.")
        signature = self.signatures[key]
        if signature.method_name != "tensorflow/serving/predict":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Expected prediction signature method_name, got "
                                                            f"{signature.method_name}")
        missing = set(signature.inputs) - set(request.inputs)
        if missing or set(request.inputs) - set(signature.inputs):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"input keys {sorted(request.inputs)} do not match the signature's {sorted(signature.inputs)}")
        feed = {signature.inputs[name].name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        names = list(request.output_filter) or list(signature.outputs)
        fetches = {name: signature.outputs[name].name for name in names}
        try:
            values = self.session.run(fetches, feed_dict=feed)
        except tf.errors.OpError as error:
            context.abort(_CODES.get(type(error), grpc.StatusCode.INTERNAL), error.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        response.model_spec.signature_name = key
        for name, value in values.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def start_server(model_name: str, export_dir: str) -> tuple[grpc.Server, int]:
    """Starts a PredictionService on 127.0.0.1 at a free port; returns (server, port). Stop with server.stop(0)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(model_name, export_dir),
                                                                      server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
