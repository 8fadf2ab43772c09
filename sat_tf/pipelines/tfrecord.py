"""The one TFRecord schema of sat_tf feature shards: the only module that knows the feature names.

One `tf.train.Example` per image:

    image_id      bytes            the dataset's id ("1000268201_693b08cb0e", "391895")
    image_path    bytes            the source file, for figures and error messages
    split         bytes            "train", "val", "test", ...
    annotations   bytes            the encoder's (L, D) feature map, float16, C order (little-endian raw bytes)
    shape         int64 [2]        (L, D)
    captions      bytes [N]        the image's raw captions (references for scoring)
    tokens        int64 [N * T]    the captions encoded with the vocabulary named in the manifest: rows of
                                   <start> w_1 .. w_n <end> <pad>..., T = max_caption_length + 2
    lengths       int64 [N]        real tokens per row (n + 2: start and end included)
    annotations_mirrored  bytes    optional: the (L, D) features of the horizontally mirrored photo, float16, C
                                   order (feature dirs extracted with mirrored views; the manifest says so)

float16 halves the disk and read cost of float32 (the paper's features fit easily in its range: ReLU/ReLU6 maps).
Raw bytes instead of a float_list keep parsing to one `decode_raw` (no per-value protobuf decoding).

`parse_example` works eagerly and inside `Dataset.map` (tests run both), on one serialized example.

Shapes: L locations, D depth, N captions of an image, T tokens per encoded caption.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

FORMAT = "sat_tf.features.v1"
FEATURE_DTYPE = np.float16

_SPEC = {
    "image_id": tf.io.FixedLenFeature([], tf.string),
    "image_path": tf.io.FixedLenFeature([], tf.string),
    "split": tf.io.FixedLenFeature([], tf.string),
    "annotations": tf.io.FixedLenFeature([], tf.string),
    "shape": tf.io.FixedLenFeature([2], tf.int64),
    "captions": tf.io.VarLenFeature(tf.string),
    "tokens": tf.io.VarLenFeature(tf.int64),
    "lengths": tf.io.VarLenFeature(tf.int64),
}
MIRRORED = "annotations_mirrored"


class FeatureValueError(ValueError):
    """Annotations a shard cannot hold; `reason` is short, for manifests ("non-finite features", ...)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _half(image_id: str, annotations: np.ndarray, what: str = "annotations") -> np.ndarray:
    """(L, D) features as little-endian float16, refusing what float16 cannot hold."""
    annotations = np.asarray(annotations)
    if annotations.ndim != 2:
        raise ValueError(f"{image_id}: {what} must be (L, D), got shape {annotations.shape}")
    if not np.all(np.isfinite(annotations)):
        raise FeatureValueError(f"{image_id}: {what} contain NaN or Inf", "non-finite features")
    with np.errstate(over="ignore"):
        half = annotations.astype("<f2")  # (L, D)
    if not np.all(np.isfinite(half)):
        raise FeatureValueError(f"{image_id}: {what} overflow float16 (|x| > 65504)",
                                "features overflow float16 (|x| > 65504)")
    return half


def serialize_example(image_id: str, image_path: str, split: str, annotations: np.ndarray,
                      captions: list[str], tokens: np.ndarray, mirrored: np.ndarray | None = None) -> bytes:
    """One image's record.

    Args:
        image_id, image_path, split: str.
        annotations: (L, D) float array; stored as float16.
        captions: the N raw captions.
        tokens: int (N, T) encoded captions (from `Vocabulary.encode`).
        mirrored: (L, D) float array or None: the features of the horizontally mirrored photo.
    """
    half = _half(image_id, annotations)  # (L, D)
    tokens = np.asarray(tokens, dtype=np.int64)  # (N, T)
    if tokens.ndim != 2 or tokens.shape[0] != len(captions):
        raise ValueError(f"{image_id}: tokens must be (N={len(captions)}, T), got shape {tokens.shape}")
    lengths = (tokens != 0).sum(axis=1)  # (N,) pad id is 0
    feature = {
        "image_id": _bytes([image_id.encode("utf-8")]),
        "image_path": _bytes([image_path.encode("utf-8")]),
        "split": _bytes([split.encode("utf-8")]),
        "annotations": _bytes([half.tobytes()]),
        "shape": _ints(half.shape),
        "captions": _bytes([c.encode("utf-8") for c in captions]),
        "tokens": _ints(tokens.reshape(-1)),
        "lengths": _ints(lengths),
    }
    if mirrored is not None:
        mirrored_half = _half(image_id, mirrored, "mirrored annotations")  # (L, D)
        if mirrored_half.shape != half.shape:
            raise ValueError(f"{image_id}: mirrored annotations have shape {mirrored_half.shape}, the annotations "
                             f"{half.shape}")
        feature[MIRRORED] = _bytes([mirrored_half.tobytes()])
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Features is a protobuf map: without `deterministic` its entries come out in an order that depends on the
    # process's string hash seed, so a resumed (new) process wrote other bytes than an uninterrupted one.
    return example.SerializeToString(deterministic=True)


def parse_example(serialized: tf.Tensor, feature_shape: tuple[int, int] | None = None,
                  dtype: tf.DType = tf.float32, mirrored: bool = False) -> dict[str, tf.Tensor]:
    """Parses one serialized example.

    Args:
        serialized: scalar string tensor.
        feature_shape: (L, D) expected from the manifest; gives the result a static shape and checks it.
        dtype: dtype of the returned annotations.
        mirrored: bool. Also parse the mirrored photo's features (the record must hold them).

    Returns:
        {"image_id": (), "image_path": (), "split": (), "annotations": (L, D), "captions": (N,),
         "tokens": (N, T) int32, "lengths": (N,) int32}, plus "annotations_mirrored" (L, D) with `mirrored`.
    """
    spec = dict(_SPEC, **{MIRRORED: tf.io.FixedLenFeature([], tf.string)}) if mirrored else _SPEC
    parsed = tf.io.parse_single_example(serialized, spec)
    shape = tf.cast(parsed["shape"], tf.int32)  # (2,)

    def features(name):
        flat = tf.io.decode_raw(parsed[name], tf.float16, little_endian=True)  # (L * D,)
        if feature_shape is None:
            return tf.reshape(flat, shape)  # (L, D)
        checks = [tf.debugging.assert_equal(shape, tf.constant(feature_shape, tf.int32), message=(
            f"a feature record's (L, D) differs from the manifest's {tuple(feature_shape)}"))]
        with tf.control_dependencies(checks):
            return tf.reshape(flat, feature_shape)  # (L, D)

    annotations = features("annotations")  # (L, D)
    captions = tf.sparse.to_dense(parsed["captions"], default_value=b"")  # (N,)
    lengths = tf.cast(tf.sparse.to_dense(parsed["lengths"]), tf.int32)  # (N,)
    tokens = tf.cast(tf.sparse.to_dense(parsed["tokens"]), tf.int32)  # (N * T,)
    tokens = tf.reshape(tokens, [tf.shape(lengths)[0], -1])  # (N, T)
    result = {
        "image_id": parsed["image_id"], "image_path": parsed["image_path"], "split": parsed["split"],
        "annotations": tf.cast(annotations, dtype), "captions": captions, "tokens": tokens, "lengths": lengths,
    }
    if mirrored:
        result[MIRRORED] = tf.cast(features(MIRRORED), dtype)  # (L, D)
    return result


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00032.tfrecord`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"
