"""Feature shards: the TFRecord schema, resumable extraction, and the streaming tf.data pipelines."""

from __future__ import annotations

import collections
import concurrent.futures
import glob
import hashlib
import itertools
import json
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.pipelines import extract as extract_module
from sat_tf.pipelines import tfrecord
from sat_tf.pipelines.dataset import evaluation_dataset, steps_per_epoch, training_dataset
from sat_tf.pipelines.extract import extract_features
from sat_tf.pipelines.manifest import FeatureError, check_features, load_manifest
from tests.pipelines import helpers


def _extract(tmp_path, name="features", count=24, shard_size=5, **kwargs):
    paths = helpers.write_images(str(tmp_path / "images"), count)
    records = helpers.make_records(paths)
    out = str(tmp_path / name)
    manifest = extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), out,
                                max_caption_length=6, shard_size=shard_size, progress=False,
                                **{"batch_size": 3, **kwargs})
    return records, out, manifest


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_example_round_trip_eager_and_in_dataset_map():
    vocab = helpers.vocabulary()
    annotations = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    captions = helpers.CAPTIONS[:3]
    tokens = vocab.encode(captions, 6)
    serialized = tfrecord.serialize_example("id1", "/x/id1.jpg", "train", annotations, captions, tokens)
    eager = tfrecord.parse_example(tf.constant(serialized), (4, 3))
    mapped = next(iter(tf.data.Dataset.from_tensors(serialized).map(lambda s: tfrecord.parse_example(s, (4, 3)))))
    for parsed in (eager, mapped):
        assert parsed["image_id"].numpy() == b"id1"
        np.testing.assert_allclose(parsed["annotations"].numpy(), annotations.astype(np.float16), rtol=0)
        np.testing.assert_array_equal(parsed["tokens"].numpy(), tokens)
        np.testing.assert_array_equal(parsed["lengths"].numpy(), (tokens != 0).sum(1))
        assert [c.decode() for c in parsed["captions"].numpy()] == captions
    with pytest.raises(tf.errors.InvalidArgumentError, match="differs from the manifest"):
        tfrecord.parse_example(tf.constant(serialized), (5, 3))


def test_serialize_refuses_non_finite_features():
    vocab = helpers.vocabulary()
    bad = np.full((4, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match="id9: annotations contain NaN"):
        tfrecord.serialize_example("id9", "p", "train", bad, ["a dog"], vocab.encode(["a dog"], 6))
    with pytest.raises(ValueError, match="overflow float16"):
        tfrecord.serialize_example("id9", "p", "train", np.full((4, 3), 1e6), ["a dog"], vocab.encode(["a dog"], 6))


def test_extraction_writes_shards_manifest_and_skips_bad_images(tmp_path):
    paths = helpers.write_images(str(tmp_path / "images"), 10)
    open(paths[1], "wb").close()  # zero bytes
    data = open(paths[3], "rb").read()
    open(paths[3], "wb").write(data[: len(data) // 2])  # truncated JPEG
    open(paths[5], "w").write("<html>not an image</html>")
    os.remove(paths[7])  # missing
    records = helpers.make_records(paths)
    out = str(tmp_path / "f")
    manifest = extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), out,
                                max_caption_length=6, shard_size=4, batch_size=3, progress=False)
    reasons = {item["image_id"]: item["reason"] for item in manifest["skipped"]}
    assert set(reasons) == {"img001", "img003", "img005", "img007"}
    assert "empty file" in reasons["img001"] and "truncated" in reasons["img003"]
    assert "cannot identify" in reasons["img005"] and "cannot read" in reasons["img007"]
    kept = [r for r in records if r.image_id not in reasons]
    assert sum(s["images"] for s in manifest["splits"].values()) == len(kept)
    assert manifest["splits"]["train"]["captions"] == sum(len(r.captions) for r in kept if r.split == "train")
    assert manifest["feature_shape"] == [4, 3]
    assert manifest["vocabulary"]["checksum"] == helpers.vocabulary().checksum()
    assert json.load(open(os.path.join(out, "manifest.json"))) == manifest
    assert not glob.glob(os.path.join(out, "*.tmp"))


def test_decoding_runs_ahead_across_shards_in_order_with_bounded_lookahead():
    """Extraction decodes through one stream over all shards: results in record order, never more than
    `lookahead` decodes queued or running, and the next shard's images are decoded before this one is used up."""
    lock = threading.Lock()
    started: list[int] = []

    def decode(i):
        with lock:
            started.append(i)
        time.sleep(0.002)
        return i * 10, None

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        stream = extract_module._decode_ahead(pool, decode, list(range(20)), lookahead=6)
        first_shard = list(itertools.islice(stream, 5))
        time.sleep(0.05)
        with lock:
            ahead = max(started)
        rest = list(stream)
    assert [x for x, _ in first_shard + rest] == [i * 10 for i in range(20)]
    assert ahead == 9  # 0..4 taken, the next shard's 5..9 (lookahead - 1) already submitted, and no more
    assert sorted(started) == list(range(20))


def test_extraction_output_does_not_depend_on_threads_or_batch(tmp_path):
    _, one, _ = _extract(tmp_path, "one", num_threads=1, batch_size=2)
    _, many, _ = _extract(tmp_path, "many", num_threads=4, batch_size=7)
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(one, "*.tfrecord")))
    assert len(names) == 6  # train 4 + val 2: several shards, so the stream crosses shard boundaries
    assert [_digest(os.path.join(one, n)) for n in names] == [_digest(os.path.join(many, n)) for n in names]


def test_killed_extraction_resumes_to_the_same_shards(tmp_path):
    _, whole, manifest = _extract(tmp_path, "whole")
    paths = helpers.write_images(str(tmp_path / "images"), 24)
    records = helpers.make_records(paths)
    resumed = str(tmp_path / "resumed")
    kwargs = dict(max_caption_length=6, shard_size=5, batch_size=3, progress=False)
    assert extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), resumed,
                            stop_after_shards=2, **kwargs) == {}
    assert not os.path.exists(os.path.join(resumed, "manifest.json"))
    finished = sorted(glob.glob(os.path.join(resumed, "*.tfrecord")))
    assert len(finished) == 2
    # What a SIGKILL mid-shard leaves: a temporary file that must never be read as a shard.
    open(os.path.join(resumed, "train-00002-of-00004.tfrecord.tmp"), "wb").write(b"half a shard")
    calls = []

    def counting_encoder(images):
        calls.append(len(images))
        return helpers.fake_encoder(images)

    manifest2 = extract_features(records, counting_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), resumed,
                                 **kwargs)
    assert sum(calls) == 24 - 6  # the two finished shards (the 6 val images) were not redone
    assert manifest2 == manifest
    for path in glob.glob(os.path.join(whole, "*.tfrecord")):
        assert _digest(path) == _digest(os.path.join(resumed, os.path.basename(path)))
    assert not glob.glob(os.path.join(resumed, "*.tmp"))


def test_resume_refuses_shards_of_another_encoder(tmp_path):
    records, out, _ = _extract(tmp_path)
    other = dict(helpers.ENCODER_INFO, layer="another")
    with pytest.raises(ValueError, match="another encoder"):
        extract_features(records, helpers.fake_encoder, other, helpers.vocabulary(), out, max_caption_length=6,
                         shard_size=5, progress=False)


def test_training_batches_one_length_each_every_caption_once(tmp_path):
    records, out, manifest = _extract(tmp_path)
    ds = training_dataset(out, batch_size=4, seed=3)
    seen = collections.Counter()
    steps = 0
    for batch in ds:
        tokens = batch["tokens"].numpy()
        lengths = (tokens != 0).sum(1)
        assert len(set(lengths)) == 1, "a batch mixes caption lengths"
        assert tokens.shape[1] == lengths[0]  # padded to exactly the batch's length
        assert batch["annotations"].shape[1:] == (4, 3) and batch["annotations"].dtype == tf.float32
        seen.update(tuple(row) for row in tokens)
        steps += 1
    vocab = helpers.vocabulary()
    expected = collections.Counter(tuple(row[row != 0]) for r in records if r.split == "train"
                                   for row in vocab.encode(list(r.captions), 6))
    assert seen == expected
    assert steps == steps_per_epoch(manifest, "train", 4)


def _order(ds):
    return [b["tokens"].numpy().tobytes() + b["annotations"].numpy().tobytes() for b in ds]


def test_training_order_is_deterministic_per_epoch_and_resumable(tmp_path):
    _, out, manifest = _extract(tmp_path)
    two_epochs = _order(training_dataset(out, 4, seed=1, num_epochs=2))
    assert two_epochs == _order(training_dataset(out, 4, seed=1, num_epochs=2))
    n = steps_per_epoch(manifest, "train", 4)
    assert len(two_epochs) == 2 * n
    assert two_epochs[n:] == _order(training_dataset(out, 4, seed=1, epoch=1))  # resuming at epoch 1
    assert two_epochs[:n] != two_epochs[n:]  # reshuffled between epochs
    assert two_epochs[:n] != _order(training_dataset(out, 4, seed=2))


def test_input_context_shards_examples_across_workers(tmp_path):
    _, out, _ = _extract(tmp_path)
    everything = collections.Counter()
    parts = []
    for worker in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        rows = collections.Counter()
        for batch in training_dataset(out, 8, input_context=ctx):
            assert batch["tokens"].shape[0] <= 4  # per-replica batch
            rows.update(r.tobytes() + a.tobytes() for r, a in zip(batch["tokens"].numpy(),
                                                                   batch["annotations"].numpy()))
        parts.append(rows)
        everything.update(rows)
    assert parts[0] and parts[1]
    single = collections.Counter(r.tobytes() + a.tobytes() for b in training_dataset(out, 8)
                                 for r, a in zip(b["tokens"].numpy(), b["annotations"].numpy()))
    assert everything == single


def test_evaluation_dataset_gives_every_image_with_its_references(tmp_path):
    records, out, _ = _extract(tmp_path)
    ids, refs = [], {}
    for batch in evaluation_dataset(out, 4, split="val"):
        for image_id, caps in zip(batch["image_id"].numpy(), batch["captions"].numpy()):
            ids.append(image_id.decode())
            refs[image_id.decode()] = [c.decode() for c in caps if c]
    val = [r for r in records if r.split == "val"]
    assert ids == [r.image_id for r in val]
    assert refs == {r.image_id: list(r.captions) for r in val}
    assert len(list(evaluation_dataset(out, 4, split="train", limit=5).unbatch())) == 5


def test_damaged_shards_are_named(tmp_path):
    _, out, manifest = _extract(tmp_path)
    shard = os.path.join(out, manifest["splits"]["train"]["shards"][1]["file"])
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    with pytest.raises(FeatureError, match=f"{os.path.basename(shard)} does not match its sha256"):
        training_dataset(out, 4)
    open(shard, "wb").write(bytes(data[:-10]))
    with pytest.raises(FeatureError, match=f"{os.path.basename(shard)} is {len(data) - 10} bytes.*truncated"):
        check_features(out, "train", verify="size")
    os.remove(shard)
    with pytest.raises(FeatureError, match="is missing"):
        check_features(out, "train")
    with pytest.raises(FeatureError, match="no 'test' split"):
        check_features(out, "val"), check_features(out, "test")


def test_features_of_another_vocabulary_or_encoder_are_refused(tmp_path):
    _, out, _ = _extract(tmp_path)
    with pytest.raises(FeatureError, match="another vocab.txt"):
        training_dataset(out, 4, vocabulary_checksum="0" * 64)
    with pytest.raises(FeatureError, match=r"features are \(4, 3\).*expects \(196, 512\)"):
        training_dataset(out, 4, feature_shape=(196, 512))
    with pytest.raises(FeatureError, match="not found"):
        load_manifest(str(tmp_path / "nothing"))


def test_flickr8k_subset_end_to_end(flickr8k_dir, tmp_path):
    """30 train + 10 dev images of the real Flickr8k through the real encoder into one training step."""
    import keras

    from sat_tf.config import ModelConfig
    from sat_tf.models.captioner import Captioner
    from sat_tf.models.encoder import build_encoder, encoder_spec
    from sat_tf.pipelines.sources import read_flickr8k
    from sat_tf.text.vocabulary import Vocabulary

    records, report = read_flickr8k(flickr8k_dir)
    subset = [r for r in records if r.split == "train"][:30] + [r for r in records if r.split == "val"][:10]
    vocab = Vocabulary.build([c for r in subset if r.split == "train" for c in r.captions], min_count=2)
    spec = encoder_spec("efficientnet_lite0", "stage6")
    encoder = build_encoder("efficientnet_lite0", "stage6")
    manifest = extract_features(subset, lambda x: encoder(x, training=False).numpy(), spec.to_dict(), vocab,
                                str(tmp_path / "f"), shard_size=16, progress=False, reader_report=report.counts())
    assert manifest["splits"]["train"]["images"] == 30 and manifest["splits"]["val"]["images"] == 10
    assert manifest["feature_shape"] == [49, 192] and not manifest["skipped"]
    config = ModelConfig(vocab_size=len(vocab), feature_dim=192, embedding_dim=16, units=32, attention_dim=16,
                         dropout=0.0)
    model = Captioner.from_model_config(config, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    ds = training_dataset(str(tmp_path / "f"), 16, vocabulary_checksum=vocab.checksum(), feature_shape=(49, 192))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
