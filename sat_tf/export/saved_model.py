"""SavedModel for TF Serving: image bytes in, captions, token ids, scores and attention maps out.

Layout (TF Serving's model base path is `<out>/<name>`; it serves the highest numeric version):

    <out>/<name>/<version>/saved_model.pb, variables/
    <out>/<name>/<version>/assets/vocab.txt     the vocabulary (the in-graph id -> word table is read from it)
    <out>/<name>/<version>/assets/config.json   model/train/data configs + an `export` section (signatures, ...)
    <out>/<name>/<version>/assets.extra/tf_serving_warmup_requests   requests TF Serving replays when loading it

Signatures (tag `serve`, method `tensorflow/serving/predict`):

    serving_default  image_bytes string (B,)  JPEG/PNG/GIF/BMP/WebP bytes -> decode, resize, encoder, beam search
                                               of width K (fixed at export), detokenise
    greedy           image_bytes string (B,)  the same with greedy decoding
    from_features    annotations float32 (B, L, D), precomputed encoder features -> beam search of width K
                     (an ensemble over several encoders takes annotations, annotations_1, ...; test-time
                     mirroring adds annotations_mirrored[_i], the features of the mirrored images)

    outputs, each signature: captions string (B,), tokens int32 (B, S) (<end> included, then <pad>), lengths
    int32 (B,) (tokens up to and including <end>), scores float32 (B,) (the beam's ranking score), log_probs
    float32 (B,), alpha float32 (B, S, L) (attention maps per step, zero after <end>; reshape L to the grid in
    config.json), and for hard attention location int32 (B, S).
    The two image signatures add error string (B,): "" where the row was captioned, else "image i: <reason>"
    (`sat_tf.images.tf_decode.decode_rows`). A bad image fails only its own row: its caption is "", its tokens
    <pad> (0), lengths, scores and log_probs 0, alpha and location zeros, and the other rows get the outputs they
    get without it, to the bit (only the decoded rows run through the encoder and the search). A request never
    fails for the content of its images.

Every signature decodes with the n-gram blocking fixed at export (`no_repeat_ngram_size`, recorded in config.json
both under `export` and as the `train` config's value).

An ensemble of work dirs (`export.source.load_ensemble_source`) exports the same way: each image is decoded and
resized once per encoder input size, every encoder runs, and the beam search runs over the members' averaged
next-word distributions; with mirroring each encoder also sees the image mirrored left-right.

Built with `keras.export.ExportArchive` from tf.functions that already carry their input signature, so
autograph and the decoding `tf.while_loop`s trace the same way as in `Captioner.generate`. Nothing in the graph
needs tensorflow-text (the stock `tensorflow/serving` image runs it), but importing tensorflow_text before loading
is harmless and keeps the habit that other sat_tf graphs need.

Shapes: B batch, G the rows of B that decoded, S = max tokens (TrainConfig.max_length + 1), L locations, D depth,
K beams, P the encoder's image side.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from sat_tf.export.source import (CONFIG, ExportSource, export_config, with_decoding, write_config,
                                  write_vocabulary)
from sat_tf.images.load import DEFAULT_MAX_PIXELS
from sat_tf.images.tf_decode import decode_rows
from sat_tf.text.vocabulary import END_ID, PAD_ID, START_ID, UNK

INPUT_BYTES = "image_bytes"
INPUT_FEATURES = "annotations"
OUTPUTS = ("captions", "tokens", "lengths", "scores", "log_probs", "alpha")
ERROR = "error"  # the image signatures' per-row error string ("" where the row was captioned)
METHOD_NAME = "tensorflow/serving/predict"
TAG = "serve"


class Detokenizer(tf.Module):
    """Token ids -> caption strings in the graph, with the id -> word table read from the vocabulary file.

    The table's initializer holds the file as a SavedModel asset, so the file travels into `assets/` and the served
    model reads it from there. The rules are `Vocabulary.decode`'s: stop at the first <end>, skip <pad> and <start>,
    join words with single spaces.

    Args:
        vocab_path: str. A vocabulary file (one token per line, id = line number).
    """

    def __init__(self, vocab_path: str, name: str = "detokenizer"):
        super().__init__(name=name)
        initializer = tf.lookup.TextFileInitializer(
            vocab_path, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
        self.id_to_word = tf.lookup.StaticHashTable(initializer, default_value=UNK, name="id_to_word")

    def __call__(self, tokens):
        """tokens int (B, S) -> captions string (B,)."""
        tokens = tf.cast(tokens, tf.int32)
        after_end = tf.cumsum(tf.cast(tf.equal(tokens, END_ID), tf.int32), axis=-1) > 0  # at or after <end>
        keep = ~after_end & tf.not_equal(tokens, PAD_ID) & tf.not_equal(tokens, START_ID)  # (B, S)
        words = tf.ragged.boolean_mask(self.id_to_word.lookup(tf.cast(tokens, tf.int64)), keep)  # (B, None)
        return tf.strings.reduce_join(words, axis=-1, separator=" ")


def serving_functions(source: ExportSource, detokenizer: Detokenizer, beam_size: int = 3,
                      length_penalty: float = 0.0, max_pixels: int = DEFAULT_MAX_PIXELS,
                      no_repeat_ngram_size: int = 0) -> dict:
    """The exported tf.functions, each with its input signature (traced once here).

    Args:
        source: ExportSource.
        detokenizer: Detokenizer built from the vocabulary file.
        beam_size: int. K of `serving_default` and `from_features`.
        length_penalty: float. See `sat_tf.decoding.beam_search.beam_search`.
        max_pixels: int. Bigger images fail their row before decoding (see `sat_tf.images.tf_decode`).
        no_repeat_ngram_size: int. n-gram blocking of every signature (0: off; `beam_search`).

    Returns:
        {"serving_default": fn, "greedy": fn, "from_features": fn}.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    decoder, max_tokens = source.decoder(), source.max_tokens
    specs = source.encoder_specs

    def caption(annotations, k: int):
        out = decoder.decode(annotations, beam_size=k, max_length=max_tokens, length_penalty=length_penalty,
                             no_repeat_ngram_size=no_repeat_ngram_size)
        if k > 1:
            out = {name: value[:, 0] for name, value in out.items()}  # the best beam (beams come sorted)
        result = {"captions": detokenizer(out["tokens"]), "tokens": out["tokens"], "lengths": out["lengths"],
                  "scores": out["scores"], "log_probs": out["log_probs"], "alpha": out["alpha"]}
        if "location" in out:
            result["location"] = out["location"]
        return result

    sizes = list(dict.fromkeys(spec.image_size for spec in specs))  # decode once per input size

    def caption_images(image_bytes, k: int):
        # Only the rows that decoded run through the encoder and the search, so a good row's outputs are those of
        # the same good rows sent without the bad ones, to the bit; the bad rows get filler (`_scatter_rows`).
        decoded = decode_rows(image_bytes, sizes, max_pixels=max_pixels)  # G of B rows, (G, P, P, 3) per size
        count = tf.size(decoded.rows)  # G
        photo, mirrored = [], []
        for encoder, spec in zip(source.encoders, specs):
            images = decoded.images[sizes.index(spec.image_size)]  # (G, P, P, 3)
            # With no good row the model runs on one blank image whose outputs are dropped: the encoder cannot run
            # on an empty batch (oneDNN's batch norm refuses it).
            images = tf.cond(count > 0, lambda x=images: x, lambda s=spec.image_size: tf.zeros([1, s, s, 3]))
            photo.append(encoder(images, training=False))  # (max(G, 1), L_i, D_i)
            if source.mirror:
                mirrored.append(encoder(tf.reverse(images, axis=[2]), training=False))  # columns reversed
        out = caption(_decoder_inputs(photo, mirrored, source.mirror), k)  # (max(G, 1), ...) each
        batch = tf.shape(image_bytes)[0]
        out = {name: _scatter_rows(value[:count], decoded.rows, batch) for name, value in out.items()}  # (B, ...)
        out[ERROR] = decoded.errors  # (B,)
        return out

    bytes_spec = tf.TensorSpec([None], tf.string, name=INPUT_BYTES)
    names = feature_input_names(source)
    depths = [spec.feature_dim for spec in specs] * (2 if source.mirror else 1)
    features_specs = [tf.TensorSpec([None, None, d], tf.float32, name=n) for n, d in zip(names, depths)]

    @tf.function(input_signature=[bytes_spec])
    def serving_default(image_bytes):
        return caption_images(image_bytes, beam_size)

    @tf.function(input_signature=[bytes_spec])
    def greedy(image_bytes):
        return caption_images(image_bytes, 1)

    @tf.function(input_signature=features_specs)
    def from_features(*annotations):  # annotations[, annotations_1, ...][, annotations_mirrored, ...]
        count = len(specs)
        return caption(_decoder_inputs(list(annotations[:count]), list(annotations[count:]), source.mirror),
                       beam_size)

    functions = {"serving_default": serving_default, "greedy": greedy, "from_features": from_features}
    for fn in functions.values():
        fn.get_concrete_function()  # ExportArchive takes traced tf.functions
    return functions


def feature_input_names(source: ExportSource) -> list[str]:
    """`from_features`' input names: annotations[_i] per encoder input i, then annotations_mirrored[_i]."""
    names = [INPUT_FEATURES + (f"_{i}" if i else "") for i in range(len(source.encoder_specs))]
    return names + ([name.replace(INPUT_FEATURES, INPUT_FEATURES + "_mirrored", 1) for name in names]
                    if source.mirror else [])


def _scatter_rows(values: tf.Tensor, rows: tf.Tensor, batch) -> tf.Tensor:
    """The outputs of the G decoded rows put back at their batch indices: (G, ...) -> (B, ...), every other row
    zero ("" for strings, 0 = <pad> for token ids).

    Args:
        values: (G, ...), one row per decoded image.
        rows: int32 (G,), their indices in the batch.
        batch: int32 scalar, B.
    """
    count = tf.shape(values)[0]  # G
    filler = tf.zeros(tf.concat([[1], tf.shape(values)[1:]], 0), values.dtype)  # (1, ...) the failed rows' value
    position = tf.tensor_scatter_nd_update(tf.fill([batch], count), rows[:, None], tf.range(count))  # (B,)
    return tf.gather(tf.concat([values, filler], 0), position)  # (B, ...)


def _decoder_inputs(photo: list, mirrored: list, mirror: bool):
    """What the decoder reads: one (B, L, D) tensor, a tuple per encoder, then the mirrored views with `mirror`."""
    if mirror:
        from sat_tf.decoding.mirrored import mirrored_inputs

        return mirrored_inputs(tuple(photo), tuple(mirrored))
    return photo[0] if len(photo) == 1 else tuple(photo)


def export_saved_model(source: ExportSource, out_dir: str, name: str = "sat_tf", version: int = 1,
                       beam_size: int = 3, length_penalty: float = 0.0, max_pixels: int = DEFAULT_MAX_PIXELS,
                       overwrite: bool = False, no_repeat_ngram_size: int = 0) -> str:
    """Writes the SavedModel to `<out_dir>/<name>/<version>/` (see the module docstring).

    Args:
        source: ExportSource (`export.source.load_source(workdir)`).
        out_dir: str. Export root; TF Serving's model base path will be `<out_dir>/<name>`.
        name: str. Model name (the `MODEL_NAME` TF Serving serves it under).
        version: int. Version subdirectory (TF Serving serves the highest).
        beam_size: int. K, fixed at export time.
        length_penalty: float. Ranking score log p / length**alpha (0: plain log-probability).
        max_pixels: int. Bigger images fail their row ("too large") before decoding.
        overwrite: bool. Replace an existing version directory instead of failing.
        no_repeat_ngram_size: int. n-gram blocking, fixed at export time (0: off).

    Returns:
        The version directory.
    """
    if int(version) < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    target = os.path.join(out_dir, name, str(int(version)))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} exists: pick another --version or pass overwrite=True")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{version}.", dir=os.path.dirname(target))
    vocab_dir = tempfile.mkdtemp(prefix=".vocab.", dir=os.path.dirname(target))
    try:
        detokenizer = Detokenizer(write_vocabulary(vocab_dir, source.vocabulary))
        functions = serving_functions(source, detokenizer, beam_size, length_penalty, max_pixels,
                                      no_repeat_ngram_size)
        archive = keras.export.ExportArchive()
        # Only the lookup table needs explicit tracking; the endpoints capture the variables they use. Tracking the
        # Keras models as well would store every weight twice (keras#23553: 2x the files and 2x the memory of
        # every server that loads them).
        archive.track(detokenizer)
        for endpoint, fn in functions.items():
            archive.add_endpoint(endpoint, fn)
        archive.write_out(staging, verbose=False)
        payload = export_config(
            with_decoding(source, no_repeat_ngram_size), "saved_model", beam_size=beam_size,
            length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size, max_pixels=max_pixels,
            signatures={endpoint: {"inputs": feature_input_names(source) if endpoint == "from_features"
                                   else [INPUT_BYTES],
                                   "outputs": list(OUTPUTS) + (["location"] if source.decoder().is_hard else [])
                                   + ([] if endpoint == "from_features" else [ERROR]),
                                   "beam_size": 1 if endpoint == "greedy" else beam_size}
                        for endpoint in functions},
            tag=TAG, method_name=METHOD_NAME)
        write_config(os.path.join(staging, "assets"), payload)
        write_warmup_requests(staging, name, max(spec.image_size for spec in source.encoder_specs))
        # The version directory appears complete or not at all: TF Serving polls the base path and would otherwise
        # try to load a half-written version. (mkdtemp made it private; a server may run as another user.)
        os.chmod(staging, 0o755)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(vocab_dir, ignore_errors=True)
    return target


def write_warmup_requests(export_dir: str, model_name: str, image_size: int) -> str | None:
    """Writes `assets.extra/tf_serving_warmup_requests`: one request per image signature, replayed by TF Serving
    when it loads the version, so the first client request does not pay for graph initialisation. Each request sends
    a grey PNG and the same PNG cut short, so that the row-by-row decoding a batch with a bad image takes
    (`decode_rows`) is initialised too, not left to the first client whose image is broken.

    Args:
        export_dir: str. The SavedModel version directory.
        model_name: str. Written into the requests' model spec.
        image_size: int. Side of the grey PNG the requests send.

    Returns:
        The file path, or None where tensorflow-serving-api (the `export` extra) is not installed.
    """
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        return None
    image = tf.io.encode_png(tf.fill([image_size, image_size, 3], tf.constant(128, tf.uint8))).numpy()
    directory = os.path.join(export_dir, "assets.extra")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        for signature in ("serving_default", "greedy"):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            request.inputs[INPUT_BYTES].CopyFrom(tf.make_tensor_proto([image, image[:len(image) // 2]],
                                                                      dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def load_saved_model(path: str):
    """`tf.saved_model.load` with tensorflow_text imported first (sat_tf graphs may use its ops)."""
    import tensorflow_text  # noqa: F401  (registers the tf-text ops before loading)

    return tf.saved_model.load(path)


def read_export_config(path: str) -> dict:
    """The config.json of an exported SavedModel version directory (`<version>/assets/config.json`)."""
    with open(os.path.join(path, "assets", CONFIG), encoding="utf-8") as f:
        return json.load(f)


