"""TFLite (LiteRT) models for phones: builtin ops only, float32 / float16 / dynamic-range int8.

Two models, each in three variants, with the vocabulary and config.json beside them:

    captioner_<variant>.tflite     one call: signature `caption`
        images float32 (B, S, S, 3), RGB 0..255, already decoded and squashed to S x S by the app
        -> tokens int32 (B, T), lengths int32 (B,), log_probs float32 (B,), alpha float32 (B, T, L)
        greedy decoding with the loop inside the model (a WHILE op), stopping when every caption has ended, with
        the n-gram blocking fixed at export (`no_repeat_ngram_size`; builtin ops: GATHER, EQUAL, SCATTER_ND)
    decoder_steps_<variant>.tflite two signatures, for beam search (or any search) written in the app:
        encode: images (B, S, S, 3) -> annotations (B, L, D), projected (B, L, A), h (B, H), c (B, H)
        step:   tokens int32 (N,), h (N, H), c (N, H), annotations (N, L, D), projected (N, L, A)
                -> log_probs (N, V), h (N, H), c (N, H), alpha (N, L)
        `sat_tf.lite.StepDecoder` is a reference app loop (greedy and beam search in numpy, n-gram blocking
        included: the app passes `no_repeat_ngram_size`, config.json says the export's value), and
        `python -m sat_tf.lite caption` captions files with an export on a device without TensorFlow.

    variants: float32; float16 (weights stored as float16: half the file, meant for GPU delegates; on CPU the
    weights are expanded to float32 and it measured slower than float32, see benchmarks/inference.py); int8
    (dynamic range: int8 weights, activations quantised on the fly; the smallest file). Full-integer int8 is not offered: calibrating the whole
    loop model crashes the converter.

How: the models are built from the same Keras layers and the same
`Captioner.decode` as the SavedModel; its greedy loop accumulates into fixed-shape buffers with one-hot masks (no
TensorArray, which would need Flex ops with a dynamic batch). Each function is frozen with
`convert_variables_to_constants_v2` first, because weights read inside a WHILE body are otherwise not embedded
(inference then fails with READ_VARIABLE or returns NaN). The converter is restricted to TFLITE_BUILTINS and every
model is checked to contain no Flex op: Flex models do not run in the LiteRT pip interpreter (LiteRT#6458), and
should not need to on a phone.

The text side stays in the app: it maps ids to words with the vocab.txt shipped beside the model (line number =
id; stop at <end>=2, skip <pad>=0 and <start>=1).

Shapes: B batch, N = B x beams, S image side, T max tokens, L locations, D depth, A attention size, H units,
V vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from sat_tf.export.source import ExportSource, export_config, with_decoding, write_config, write_vocabulary
from sat_tf.files import write_atomic
from sat_tf.models.captioner import Captioner

VARIANTS = ("float32", "float16", "int8")
MODELS = {"captioner": ("caption",), "decoder_steps": ("encode", "step")}


@dataclasses.dataclass
class TFLiteArtifact:
    """One written .tflite file.

    Args:
        path: str. The file.
        model: str. "captioner" or "decoder_steps".
        variant: str. "float32", "float16" or "int8".
        size_bytes: int. File size.
        ops: list of str. The distinct builtin op names in the model.
        latency_ms: float or None. Median wall time of one batch-1 call (`caption`, or `encode` plus greedy
            `step`s for decoder_steps), when measured.
    """

    path: str
    model: str
    variant: str
    size_bytes: int
    ops: list[str]
    latency_ms: float | None = None


def inference_captioner(source: ExportSource) -> Captioner:
    """The Captioner whose decoding graph goes into TFLite.

    Soft attention: the trained model itself. Hard attention decoded with the expected context (the default
    `hard_inference`) computes exactly soft attention's context, so its weights are copied into a soft-attention
    twin: the hard layer's bookkeeping (a `keras.ops.argmax` whose TF lowering tests the sign bit with BitwiseAnd,
    which TFLite builtins lack, and tfp log-prob/entropy) then stays out of the phone model. "argmax" and "sample"
    hard inference are refused with the reason.
    """
    cfg = source.model_config
    if cfg.attention == "soft":
        return source.captioner
    if cfg.hard_inference != "expected":
        raise ValueError(f"TFLite export supports hard attention with hard_inference='expected' only, got "
                         f"{cfg.hard_inference!r}: 'sample' draws random locations, and 'argmax' goes through "
                         f"keras.ops.argmax, whose sign-bit check (BitwiseAnd) is not a TFLite builtin op")
    twin = Captioner.from_model_config(dataclasses.replace(cfg, attention="soft"))
    trained = {_relative_path(v): v for v in source.captioner.trainable_weights}
    for variable in twin.trainable_weights:
        name = _relative_path(variable)
        if name not in trained or tuple(trained[name].shape) != tuple(variable.shape):
            raise ValueError(f"cannot map the hard-attention weights onto a soft-attention twin: {name}")
        variable.assign(trained[name])
    return twin


def _relative_path(variable) -> str:
    """A Keras variable's path without the model's own (instance-numbered) name."""
    return variable.path.split("/", 1)[1]


def tflite_functions(source: ExportSource,
                     no_repeat_ngram_size: int = 0) -> dict[str, tf.types.experimental.GenericFunction]:
    """The tf.functions that become TFLite signatures: `caption`, `encode` and `step` (module docstring).

    Args:
        source: ExportSource.
        no_repeat_ngram_size: int. n-gram blocking inside `caption` (0: off); `step` is one step, blocking is the
            app loop's.
    """
    captioner, encoder = inference_captioner(source), source.encoder
    cell = captioner.cell
    size, max_tokens = source.image_size, source.max_tokens
    cfg = source.model_config
    logit_mask = captioner.decode_logit_mask()  # (V,) the tokens `decode` never emits
    images_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")

    @tf.function(input_signature=[images_spec])
    def caption(images):
        annotations = encoder(images, training=False)  # (B, L, D)
        out = captioner.decode(annotations, beam_size=1, max_length=max_tokens,
                               no_repeat_ngram_size=no_repeat_ngram_size)
        return {"tokens": out["tokens"], "lengths": out["lengths"], "log_probs": out["log_probs"],
                "alpha": out["alpha"]}

    @tf.function(input_signature=[images_spec])
    def encode(images):
        annotations = encoder(images, training=False)  # (B, L, D)
        h, c = cell.initial_state(annotations)  # (B, H)
        return {"annotations": annotations, "projected": cell.prepare(annotations), "h": h, "c": c}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.int32, name="tokens"),
        tf.TensorSpec([None, cfg.units], tf.float32, name="h"),
        tf.TensorSpec([None, cfg.units], tf.float32, name="c"),
        tf.TensorSpec([None, None, cfg.feature_dim], tf.float32, name="annotations"),
        tf.TensorSpec([None, None, cfg.attention_dim], tf.float32, name="projected")])
    def step(tokens, h, c, annotations, projected):
        # One step of `Captioner.decode_step_fn`, with W_a a + b passed in rather than recomputed every step.
        embedded = captioner.embedding(tokens)  # (N, E)
        h, c, extras = cell.step(cell.project_inputs(embedded), [h, c], annotations, projected,
                                 cell.recurrent_kernel())
        logits = cell.output_logits(embedded, h, extras["context"], training=False)  # (N, V)
        return {"log_probs": tf.nn.log_softmax(tf.cast(logits, tf.float32) + logit_mask), "h": h, "c": c,
                "alpha": extras["alpha"]}

    return {"caption": caption, "encode": encode, "step": step}


def convert(functions: dict, variant: str = "float32") -> bytes:
    """Freezes tf.functions and converts them into one builtins-only TFLite model, one signature per function.

    Args:
        functions: signature key -> tf.function with an input signature.
        variant: "float32", "float16" or "int8" (dynamic range).

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: unknown variant, or the model would need Flex (select TF) ops.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    # Frozen functions saved as signatures of an empty module: from_saved_model then names each signature after its
    # key, which from_concrete_functions does not let us choose.
    signatures = {key: _frozen(fn) for key, fn in functions.items()}
    staging = tempfile.mkdtemp(prefix="sat_tf_tflite_")
    try:
        tf.saved_model.save(tf.Module(), staging, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(staging, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if variant in ("float16", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
        model = converter.convert()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    flex = [op for op in op_names(model) if op.startswith("Flex")]
    if flex:
        raise ValueError(f"the TFLite model needs Flex ops {flex}; mobile models must be builtins-only")
    return model


def _frozen(fn) -> tf.types.experimental.ConcreteFunction:
    """`fn` with its variables turned into constants, keeping its input names and its output dict."""
    concrete = fn.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)  # returns a flat list: output names would be lost

    @tf.function(input_signature=concrete.structured_input_signature[0])
    def named(*args):
        return tf.nest.pack_sequence_as(concrete.structured_outputs, frozen(*args))

    return named.get_concrete_function()


def op_names(model: bytes | str) -> list[str]:
    """Distinct op names of a TFLite model (bytes or path) over all its subgraphs, e.g. ["ADD", "WHILE", ...].

    Read from the flatbuffer's operator-code table, which covers every subgraph (signatures, WHILE bodies);
    custom ops appear under their custom name, so Flex ops show up as "Flex...".
    """
    from tensorflow.lite.python import schema_py_generated as schema

    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            model = f.read()
    root = schema.Model.GetRootAsModel(bytearray(model), 0)
    builtin_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    names = set()
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        # Codes >= 127 live in BuiltinCode; older ones in DeprecatedBuiltinCode (the larger of the two is right).
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(code.CustomCode().decode("utf-8"))
        else:
            names.add(builtin_names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(names)


def export_tflite(source: ExportSource, out_dir: str, variants=VARIANTS, models=tuple(MODELS),
                  measure_latency: bool = True, verbose: bool = True,
                  no_repeat_ngram_size: int = 0) -> list[TFLiteArtifact]:
    """Converts and writes the TFLite models with vocab.txt and config.json into `out_dir`.

    Args:
        source: ExportSource.
        out_dir: str. Destination folder (created).
        variants: iterable of "float32", "float16", "int8".
        models: iterable of "captioner", "decoder_steps".
        measure_latency: bool. Time a batch-1 call of each file on a grey image (LiteRT interpreter, this machine).
        verbose: bool. Print a table of files, sizes and latencies.
        no_repeat_ngram_size: int. n-gram blocking of `caption` (0: off), and the value config.json tells the app
            loop to use (`export.no_repeat_ngram_size` and `train.no_repeat_ngram_size`).

    Returns:
        One TFLiteArtifact per file.
    """
    source.refuse_composite("TFLite")
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown TFLite models/variants {unknown}; models: {list(MODELS)}, variants: {VARIANTS}")
    os.makedirs(out_dir, exist_ok=True)
    functions = tflite_functions(source, no_repeat_ngram_size)
    artifacts = []
    for model in models:
        for variant in variants:
            flatbuffer = convert({key: functions[key] for key in MODELS[model]}, variant)
            path = os.path.join(out_dir, f"{model}_{variant}.tflite")
            write_atomic(path, lambda f: f.write(flatbuffer), binary=True)
            artifact = TFLiteArtifact(path, model, variant, len(flatbuffer), op_names(flatbuffer))
            if measure_latency:
                artifact.latency_ms = measure_tflite_latency(path, source.image_size, source.max_tokens)
            artifacts.append(artifact)
    write_vocabulary(out_dir, source.vocabulary)
    blocking = f", no repeated {no_repeat_ngram_size}-gram" if no_repeat_ngram_size else ""
    write_config(out_dir, export_config(
        with_decoding(source, no_repeat_ngram_size), "tflite",
        decoding=f"greedy inside `caption`{blocking}; app-side loop over `encode` / `step`",
        no_repeat_ngram_size=no_repeat_ngram_size,
        files={os.path.basename(a.path): {"model": a.model, "variant": a.variant, "size_bytes": a.size_bytes,
                                          "signatures": list(MODELS[a.model])} for a in artifacts},
        input={"name": "images", "dtype": "float32", "shape": [-1, source.image_size, source.image_size, 3],
               "range": "RGB 0..255", "resize": source.encoder_spec.resize}))
    if verbose:
        print(format_table(artifacts))
    return artifacts


def measure_tflite_latency(path: str, image_size: int, max_tokens: int, batch: int = 1, runs: int = 3,
                           num_threads: int | None = None) -> float:
    """Median milliseconds of one call on a grey batch: `caption`, or `encode` + a greedy `step` loop.

    Args:
        path: str. A .tflite file written by `export_tflite`.
        image_size: int. S.
        max_tokens: int. T, the step loop's length cap.
        batch: int. B.
        runs: int. Timed calls after one warm-up call.
        num_threads: int or None. Interpreter threads (None: LiteRT's default).
    """
    from sat_tf.lite.runtime import StepDecoder, TFLiteCaptioner

    images = np.full((batch, image_size, image_size, 3), 128.0, np.float32)
    with open(path, "rb") as f:
        content = f.read()
    if "caption" in _signature_keys(content):
        model = TFLiteCaptioner(model_content=content, num_threads=num_threads)
        call = lambda: model(images)  # noqa: E731
    else:
        model = StepDecoder(model_content=content, num_threads=num_threads)
        call = lambda: model.greedy(images, max_tokens)  # noqa: E731
    return median_seconds(call, runs) * 1000.0


def median_seconds(call: Callable[[], object], runs: int) -> float:
    """Median wall time of `call()` over `runs` calls, after one untimed warm-up call (the export report's latencies
    and the benchmarks)."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _signature_keys(content: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return list(Interpreter(model_content=content).get_signature_list())


def format_table(artifacts: list[TFLiteArtifact]) -> str:
    """A printable table of TFLite files, sizes and batch-1 latencies."""
    lines = [f"{'file':34s} {'size':>10s} {'latency (B=1)':>14s}"]
    for a in artifacts:
        latency = "-" if a.latency_ms is None else f"{a.latency_ms:.1f} ms"
        lines.append(f"{os.path.basename(a.path):34s} {a.size_bytes / 2 ** 20:7.2f} MiB {latency:>14s}")
    return "\n".join(lines)
