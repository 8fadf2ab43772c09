"""Mirrored views: features of the horizontally mirrored photo stored beside the photo's, training augmentation
that reads them with a probability, and the checks that refuse features without them."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.config import DataConfig
from sat_tf.pipelines import tfrecord
from sat_tf.pipelines.dataset import evaluation_dataset, steps_per_epoch, training_dataset
from sat_tf.pipelines.manifest import FeatureError
from sat_tf.pipelines.extract import extract_features
from tests.pipelines import helpers

# The fake encoder gives the mean colour of the 2x2 quadrants (row-major): mirroring the photo swaps the left and
# right quadrants of each row.
MIRROR_QUADRANTS = [1, 0, 3, 2]


def _extract(tmp_path, name="features", mirrored=True, **kwargs):
    paths = helpers.write_images(str(tmp_path / "images"), 24)
    records = helpers.make_records(paths)
    out = str(tmp_path / name)
    manifest = extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), out,
                                max_caption_length=6, shard_size=5, batch_size=3, progress=False,
                                mirrored=mirrored, **kwargs)
    return records, out, manifest


def test_record_round_trip_with_the_mirrored_view():
    vocab = helpers.vocabulary()
    photo = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    mirror = photo[MIRROR_QUADRANTS]
    tokens = vocab.encode(helpers.CAPTIONS[:2], 6)
    serialized = tfrecord.serialize_example("id", "/x/id.jpg", "train", photo, helpers.CAPTIONS[:2], tokens,
                                            mirror)
    parsed = tfrecord.parse_example(tf.constant(serialized), (4, 3), mirrored=True)
    np.testing.assert_array_equal(parsed["annotations"].numpy(), photo.astype(np.float16))
    np.testing.assert_array_equal(parsed[tfrecord.MIRRORED].numpy(), mirror.astype(np.float16))
    assert tfrecord.MIRRORED not in tfrecord.parse_example(tf.constant(serialized), (4, 3))  # read on request only
    plain = tfrecord.serialize_example("id", "/x/id.jpg", "train", photo, helpers.CAPTIONS[:2], tokens)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tfrecord.parse_example(tf.constant(plain), (4, 3), mirrored=True)
    with pytest.raises(ValueError, match="mirrored annotations have shape"):
        tfrecord.serialize_example("id", "/x/id.jpg", "train", photo, helpers.CAPTIONS[:2], tokens, photo[:3])
    with pytest.raises(tfrecord.FeatureValueError, match="mirrored annotations contain NaN"):
        tfrecord.serialize_example("id", "/x/id.jpg", "train", photo, helpers.CAPTIONS[:2], tokens,
                                   np.full_like(photo, np.nan))


def test_extraction_stores_the_encoder_features_of_the_mirrored_pixels(tmp_path):
    records, out, manifest = _extract(tmp_path)
    assert manifest["mirrored_views"] is True
    assert json.load(open(os.path.join(out, "manifest.json")))["mirrored_views"] is True
    seen = 0
    for batch in evaluation_dataset(out, 4, split="val", mirrored=True):
        for photo, mirror in zip(batch["annotations"].numpy(), batch[tfrecord.MIRRORED].numpy()):
            # computed from the mirrored pixels, which the fake encoder maps to swapped quadrants
            np.testing.assert_allclose(mirror, photo[MIRROR_QUADRANTS], atol=2e-3)
            assert not np.allclose(mirror, photo, atol=1e-3)
            seen += 1
    assert seen == sum(r.split == "val" for r in records)


def test_resume_refuses_shards_without_mirrored_views(tmp_path):
    _extract(tmp_path, mirrored=False, stop_after_shards=2)
    with pytest.raises(ValueError, match="mirrored views setting"):
        _extract(tmp_path, mirrored=True)


def _rows(ds):
    """Every (caption tokens, annotations) pair a training dataset yields, as bytes."""
    return [t.tobytes() + a.tobytes() for b in ds for t, a in zip(b["tokens"].numpy(), b["annotations"].numpy())]


def _views(records, out):
    """image annotations bytes -> "photo" / "mirrored", from the evaluation datasets of every split."""
    views = {}
    for split in ("train", "val"):
        for batch in evaluation_dataset(out, 8, split=split, mirrored=True):
            for photo, mirror in zip(batch["annotations"].numpy(), batch[tfrecord.MIRRORED].numpy()):
                views[photo.tobytes()] = "photo"
                views[mirror.tobytes()] = "mirrored"
    return views


def test_mirror_probability_picks_the_view_per_caption_reproducibly(tmp_path):
    records, out, manifest = _extract(tmp_path)
    views = _views(records, out)

    def view_counts(ds):
        counts = collections.Counter()
        for batch in ds:
            for a in batch["annotations"].numpy():
                counts[views[a.tobytes()]] += 1
        return counts

    captions = manifest["splits"]["train"]["captions"]
    assert view_counts(training_dataset(out, 4, seed=1)) == {"photo": captions}
    assert view_counts(training_dataset(out, 4, seed=1, mirror_probability=1.0)) == {"mirrored": captions}
    half = view_counts(training_dataset(out, 4, seed=1, mirror_probability=0.5))
    assert sum(half.values()) == captions and min(half.values()) > 0.2 * captions  # 52 captions: both views

    two = _rows(training_dataset(out, 4, seed=1, num_epochs=2, mirror_probability=0.5))
    assert two == _rows(training_dataset(out, 4, seed=1, num_epochs=2, mirror_probability=0.5))
    n = sum(len(b["tokens"]) for b in training_dataset(out, 4, seed=1))
    assert two[n:] == _rows(training_dataset(out, 4, seed=1, epoch=1, mirror_probability=0.5))  # resumable
    assert sorted(two[:n]) != sorted(two[n:])  # other views drawn in the next epoch
    # the same batches per epoch as without mirroring (epoch sizing from the manifest still holds)
    steps = sum(1 for _ in training_dataset(out, 4, seed=1, mirror_probability=0.5))
    assert steps == steps_per_epoch(manifest, "train", 4)


def test_features_without_mirrored_views_are_refused_by_name(tmp_path):
    _, out, manifest = _extract(tmp_path, mirrored=False)
    assert manifest["mirrored_views"] is False
    with pytest.raises(FeatureError, match=f"{out} has no mirrored views.*--mirrored"):
        training_dataset(out, 4, mirror_probability=0.5)
    with pytest.raises(FeatureError, match=f"{out} has no mirrored views"):
        evaluation_dataset(out, 4, mirrored=True)


def test_config_checks_the_mirror_settings():
    DataConfig(mirrored_views=True, mirror_probability=0.5)
    with pytest.raises(ValueError, match="mirror_probability must be in"):
        DataConfig(mirrored_views=True, mirror_probability=1.5)
    with pytest.raises(ValueError, match="needs DataConfig.mirrored_views"):
        DataConfig(mirror_probability=0.5)
