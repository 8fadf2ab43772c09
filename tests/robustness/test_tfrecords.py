"""Damaged or foreign feature shards. tests/pipelines/test_extract_dataset.py already checks that
`check_features` names a shard that is truncated (size), corrupt (sha256) or missing, and refuses features of
another vocabulary or encoder by the manifest; here: what happens when that check is switched off or bypassed,
and whether the advice in its error message really repairs the features."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.pipelines.dataset import evaluation_dataset, training_dataset
from sat_tf.pipelines.manifest import FeatureError, check_features, load_manifest
from sat_tf.pipelines.extract import extract_features
from tests.pipelines import helpers


def _extract(tmp_path, name="features", encoder=helpers.fake_encoder, info=helpers.ENCODER_INFO, vocabulary=None):
    paths = helpers.write_images(str(tmp_path / "images"), 24)
    out = str(tmp_path / name)
    manifest = extract_features(helpers.make_records(paths), encoder, info, vocabulary or helpers.vocabulary(), out,
                                max_caption_length=6, shard_size=5, batch_size=3, progress=False)
    return out, manifest


def _shard(out, manifest, index=1, split="train"):
    return os.path.join(out, manifest["splits"][split]["shards"][index]["file"])


def _read_all(ds):
    return sum(int(batch["annotations"].shape[0]) for batch in ds)


def test_truncated_shard_read_without_verification_fails_loudly(tmp_path):
    """verify="none" skips the size check: reading must still stop with a DataLossError, never yield half a shard
    and carry on (TensorFlow's message gives the byte offset, not the file: verification is on by default)."""
    out, manifest = _extract(tmp_path)
    shard = _shard(out, manifest)
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:-10])
    with pytest.raises(tf.errors.DataLossError, match="truncated record"):
        _read_all(training_dataset(out, 4, verify="none"))
    with pytest.raises(tf.errors.DataLossError, match="truncated record"):
        _read_all(evaluation_dataset(out, 4, split="train", verify="none"))


@pytest.mark.parametrize("where", ["payload", "length"])
def test_flipped_byte_passes_the_size_check_but_not_the_record_crc(tmp_path, where):
    """verify="size" (what the per-epoch evaluation uses) cannot see a flipped byte; the TFRecord CRCs do."""
    out, manifest = _extract(tmp_path)
    shard = _shard(out, manifest)
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2 if where == "payload" else 3] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    check_features(out, "train", verify="size")  # same size: passes
    with pytest.raises(FeatureError, match=f"{re.escape(shard)} does not match its sha256"):
        check_features(out, "train")
    with pytest.raises(tf.errors.DataLossError, match="corrupted record"):
        _read_all(training_dataset(out, 4, verify="size"))


def test_shard_swapped_in_from_another_extraction(tmp_path):
    """A shard copied over from another run (another encoder: 9 locations, not 4) is refused by its sha256; with
    verification off, by the per-record shape check against the manifest."""
    out, manifest = _extract(tmp_path)

    def other_encoder(images):  # (B, 9, 3): a 3x3 grid
        b = images.shape[0]
        return images.astype(np.float32)[:, ::11, ::11].reshape(b, -1, 3)[:, :9] / 255.0

    other_info = dict(helpers.ENCODER_INFO, name="other", grid=[3, 3], num_locations=9)
    other, other_manifest = _extract(tmp_path, "other", encoder=other_encoder, info=other_info)
    shard = _shard(out, manifest)
    shutil.copyfile(_shard(other, other_manifest), shard)
    with pytest.raises(FeatureError, match=f"{re.escape(shard)} (is \\d+ bytes|does not match its sha256)"):
        training_dataset(out, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"differs from the manifest.{1,2}s \(4, 3\)"):
        _read_all(training_dataset(out, 4, verify="none"))


def test_manifest_that_is_not_json_or_of_another_format(tmp_path):
    out, _ = _extract(tmp_path)
    path = os.path.join(out, "manifest.json")
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])  # cut short (a copy that did not finish)
    with pytest.raises(FeatureError, match=f"{re.escape(path)} is not valid JSON"):
        training_dataset(out, 4)
    manifest = json.loads(text)
    manifest["format"] = "sat_tf.features.v0"
    open(path, "w").write(json.dumps(manifest))
    with pytest.raises(FeatureError, match=f"{re.escape(path)}: format 'sat_tf.features.v0' is not"):
        load_manifest(out)


@pytest.fixture
def scenes_features(tmp_path, monkeypatch):
    """`prepare_features` on 6 scenes per split (fake backbone): (config, features dir, manifest, shard bytes)."""
    from sat_tf.config import DataConfig
    from sat_tf.pipelines.prepare import prepare_features
    from tests.robustness import fake_backbone

    fake_backbone.install(monkeypatch)
    out = str(tmp_path / "features")
    config = DataConfig(dataset="scenes", max_images=6, min_count=1, encoder_layer="stage5", image_size=64,
                        shard_size=2)
    manifest = prepare_features(config, out, progress=False)
    shards = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)
              if name.endswith(".tfrecord")}
    return config, out, manifest, shards


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "deleted"])
def test_following_the_error_message_repairs_the_features(scenes_features, damage):
    """Do exactly what the FeatureError says (delete the files it names, rerun the extraction): the features come
    back byte for byte. The old advice ("delete it and rerun") rewrote nothing: the rerun found manifest.json and
    returned it, and training failed again on the now missing shard."""
    from sat_tf.pipelines.prepare import prepare_features

    config, out, manifest, shards = scenes_features
    shard = _shard(out, manifest, index=1)
    data = bytearray(shards[os.path.basename(shard)])
    if damage == "flipped_byte":
        data[len(data) // 2] ^= 0xFF
        open(shard, "wb").write(bytes(data))
    elif damage == "truncated":
        open(shard, "wb").write(bytes(data[:-7]))
    else:
        os.remove(shard)
    with pytest.raises(FeatureError) as raised:
        training_dataset(out, 4)
    message = str(raised.value)
    advice = message.partition("; delete ")[2]
    named = [word.rstrip(",;:") for word in advice.split() if word.startswith(out + os.sep)]
    assert named, f"the message names no file to delete: {message}"
    for path in set(named):
        if os.path.exists(path):
            os.remove(path)
    assert prepare_features(config, out, progress=False) == manifest
    for name, content in shards.items():
        assert open(os.path.join(out, name), "rb").read() == content, f"{name} differs after the repair"
    assert _read_all(training_dataset(out, 4)) == manifest["splits"]["train"]["captions"]
