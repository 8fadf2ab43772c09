"""Streaming tf.data input from feature shards: training (one example per caption) and evaluation (one per image).

Training pipeline, per epoch:

    shard files (shuffled by seed + epoch; per worker under tf.distribute where there are enough shards)
      ▸ interleave TFRecord readers ▸ parse (pipelines.tfrecord) ▸ shuffle images ▸ one example per caption
        (with `mirror_probability` p > 0: each caption paired with the mirrored photo's features with probability
        p, drawn from seed + epoch, else with the photo's)
      ▸ shuffle captions (seed + epoch) ▸ batches of captions of the SAME length (paper sec. 4.3:
        "we build a dictionary mapping the length of a sentence to the corresponding subset of captions" and
        sample minibatches of one length; here per-length buckets of `bucket_by_sequence_length`)
      ▸ padding to the batch's length ▸ prefetch (AUTOTUNE)

Memory is bounded by the two shuffle buffers (images, then captions), the buckets and the prefetch, never by the
dataset size (with mirrored views the image buffer holds both views of each image); annotations travel as float16 until batching. Batches per epoch do not
depend on the shuffle order (each length bucket yields ceil(n / B) batches), so `steps_per_epoch` is computed
from the manifest's length histogram, and a resumed run replays exactly the epochs it has not finished.

Before any shard is read, `check_features` (`sat_tf.pipelines.manifest`) compares every shard's size (and by
default its sha256) with the manifest: a truncated or corrupt shard is reported by name instead of surfacing as a
DataLossError mid-epoch.

Shapes: B batch, L locations, D depth, T tokens (<start> ... <end>, padded), N captions of an image.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from sat_tf.pipelines import tfrecord
from sat_tf.pipelines.manifest import FeatureError, check_features, load_manifest

AUTOTUNE = tf.data.AUTOTUNE


def length_boundaries(max_caption_length: int) -> list[int]:
    """Bucket boundaries giving one bucket per token length 3 .. max_caption_length + 2 (sec. 4.3)."""
    return list(range(4, max_caption_length + 3))


def steps_per_epoch(manifest: dict, split: str, batch_size: int) -> int:
    """Batches per epoch of `training_dataset`: sum over lengths of ceil(captions of that length / B), B global."""
    histogram = manifest["splits"][split]["length_histogram"]
    return sum(math.ceil(int(count) / batch_size) for count in histogram.values())


def _files_dataset(files: Sequence[str], seed, input_context) -> tf.data.Dataset:
    """The shard paths of this input pipeline, in an order shuffled by `seed`."""
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if input_context is not None and input_context.num_input_pipelines > 1 \
            and len(files) >= input_context.num_input_pipelines:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)


def require_mirrored_views(manifest: dict, features_dir: str, why: str) -> None:
    """FeatureError naming the directory unless its shards hold the mirrored photos' features."""
    if not manifest.get("mirrored_views", False):
        raise FeatureError(f"{features_dir} has no mirrored views, which {why} reads: extract the features again "
                           f"with mirrored views (python -m sat_tf.pipelines.extract ... --mirrored, or "
                           f"--set data.mirrored_views=true) into a new directory")


def _captions_of(example: dict, mirror_probability: float = 0.0, seed=None) -> tf.data.Dataset:
    """One image's record -> one element per caption: annotations (L, D) with that caption's tokens (T,).

    With mirror_probability p > 0 each caption reads the mirrored photo's features with probability p, drawn with
    the stateless `seed` (int64 (2,))."""
    n = tf.shape(example["lengths"])[0]
    annotations = tf.repeat(example["annotations"][None], n, axis=0)  # (N, L, D)
    if mirror_probability > 0:
        mirrored = tf.random.stateless_uniform([n], seed=seed) < mirror_probability  # (N,)
        annotations = tf.where(mirrored[:, None, None], example[tfrecord.MIRRORED][None], annotations)  # (N, L, D)
    return tf.data.Dataset.from_tensor_slices({
        "annotations": annotations,  # (N, L, D)
        "tokens": example["tokens"],  # (N, T)
        "length": example["lengths"],  # (N,)
    })


def training_dataset(features_dir: str, batch_size: int, *, split: str = "train", epoch: int = 0, seed: int = 0,
                     shuffle_buffer: int = 2048, image_shuffle_buffer: int = 1024,
                     deterministic: bool = True, input_context=None,
                     manifest: dict | None = None, vocabulary_checksum: str | None = None,
                     feature_shape: Sequence[int] | None = None, verify: str = "sha256",
                     dtype: tf.DType = tf.float32, num_epochs: int = 1,
                     mirror_probability: float = 0.0) -> tf.data.Dataset:
    """Shuffled same-length batches {"annotations": (B, L, D), "tokens": (B, T)} for `num_epochs` epochs.

    Args:
        features_dir: str. The extraction output.
        batch_size: int. Global batch size; under tf.distribute, `input_context` turns it into the per-replica one.
        split: str. Split to train on.
        epoch: int. First epoch to produce: epoch e is shuffled with seed + e, so a resumed run gets the same data
            order as an uninterrupted one.
        seed: int. Base seed.
        shuffle_buffer: int. Captions in the caption-level shuffle buffer.
        image_shuffle_buffer: int. Images in the image-level shuffle buffer (before captions are expanded).
            The two buffers, the length buckets and the prefetch bound the memory; annotations stay float16 until
            a batch is formed (Flickr8k 7x7x1280: ~0.5 GB in all, whatever the dataset size).
        deterministic: bool. Same order on every run (the default); False lets tf.data reorder for speed.
        input_context: tf.distribute.InputContext or None. Per-worker file sharding where there are at least as
            many shards as input pipelines (else every worker reads everything and takes its own examples).
        manifest, vocabulary_checksum, feature_shape, verify: see `check_features`.
        dtype: annotations dtype in the batches.
        num_epochs: int. Epochs epoch .. epoch + num_epochs - 1, one after the other.
        mirror_probability: float. Chance that a caption is paired with the mirrored photo's features (needs
            features extracted with mirrored views); drawn per caption from seed + epoch.
    """
    manifest = manifest or load_manifest(features_dir)
    files = check_features(features_dir, split, manifest=manifest, vocabulary_checksum=vocabulary_checksum,
                           feature_shape=feature_shape, verify=verify)
    mirror = float(mirror_probability) > 0
    if mirror:
        require_mirrored_views(manifest, features_dir, f"training with mirror_probability={mirror_probability}")
    shape = tuple(manifest["feature_shape"])
    per_replica = input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
    shard_by_example = (input_context is not None and input_context.num_input_pipelines > 1
                        and len(files) < input_context.num_input_pipelines)
    boundaries = length_boundaries(int(manifest["max_caption_length"]))

    def one_epoch(e: int) -> tf.data.Dataset:
        epoch_seed = (int(seed) * 1000003 + e) % (2 ** 62)
        ds = _files_dataset(files, epoch_seed, input_context)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)), block_length=16,
                           num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        ds = ds.map(lambda s: tfrecord.parse_example(s, shape, tf.float16, mirrored=mirror),
                    num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        ds = ds.shuffle(image_shuffle_buffer, seed=epoch_seed + 1, reshuffle_each_iteration=False)
        if mirror:
            # one stateless seed per image, from a stream fixed by the epoch's seed: the same draws on every run
            seeds = tf.data.Dataset.random(seed=epoch_seed + 2).batch(2)  # (2,) int64
            ds = tf.data.Dataset.zip((ds, seeds)).flat_map(
                lambda example, s: _captions_of(example, float(mirror_probability), s))
        else:
            ds = ds.flat_map(_captions_of)
        if shard_by_example:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        ds = ds.bucket_by_sequence_length(
            lambda x: x["length"], bucket_boundaries=boundaries,
            bucket_batch_sizes=[per_replica] * (len(boundaries) + 1), drop_remainder=False,
            pad_to_bucket_boundary=False)
        return ds.map(lambda batch: _trim(batch, dtype), num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    ds = one_epoch(epoch)
    for e in range(epoch + 1, epoch + num_epochs):
        ds = ds.concatenate(one_epoch(e))
    options = tf.data.Options()
    options.deterministic = deterministic
    ds = ds.with_options(options)
    return ds.prefetch(AUTOTUNE)


def _trim(batch: dict, dtype: tf.DType) -> dict:
    """Drops the `length` helper and padding columns beyond the batch's longest caption; casts the annotations."""
    longest = tf.reduce_max(batch["length"])
    return {"annotations": tf.cast(batch["annotations"], dtype), "tokens": batch["tokens"][:, :longest]}


def evaluation_dataset(features_dir: str, batch_size: int, *, split: str = "val", limit: int = 0,
                       manifest: dict | None = None, vocabulary_checksum: str | None = None,
                       feature_shape: Sequence[int] | None = None, verify: str = "sha256",
                       dtype: tf.DType = tf.float32, mirrored: bool = False) -> tf.data.Dataset:
    """Images in file order, batched: {"image_id": (B,), "image_path": (B,), "annotations": (B, L, D),
    "captions": (B, N) (padded with b"" where an image has fewer captions)}, plus "annotations_mirrored"
    (B, L, D) with `mirrored` (the features must have mirrored views); `limit` > 0 keeps the first images."""
    manifest = manifest or load_manifest(features_dir)
    files = check_features(features_dir, split, manifest=manifest, vocabulary_checksum=vocabulary_checksum,
                           feature_shape=feature_shape, verify=verify)
    if mirrored:
        require_mirrored_views(manifest, features_dir, "test-time mirroring")
    shape = tuple(manifest["feature_shape"])
    keys = ("image_id", "image_path", "annotations", "captions") + ((tfrecord.MIRRORED,) if mirrored else ())
    ds = tf.data.TFRecordDataset(files)
    if limit:
        ds = ds.take(limit)
    ds = ds.map(lambda s: tfrecord.parse_example(s, shape, dtype, mirrored=mirrored), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda x: {k: x[k] for k in keys})
    padding = {"image_id": b"", "image_path": b"", "annotations": tf.constant(0, dtype), "captions": b""}
    if mirrored:
        padding[tfrecord.MIRRORED] = tf.constant(0, dtype)
    ds = ds.padded_batch(batch_size, padding_values=padding)
    return ds.prefetch(AUTOTUNE)
