"""Faults on the way from features to weights: an encoder that returns NaN, Inf or values float16 cannot hold (the
image is skipped with the reason; the run goes on), and a disk that fills up while a checkpoint is written (the
previous checkpoint survives and the run resumes from it). A loss that becomes NaN during training is covered by
tests/test_train.py::test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
import resource
import signal

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.images.load import load_and_resize
from sat_tf.pipelines.extract import extract_features
from sat_tf.training import trainer
from sat_tf.training.callbacks import Progress
from tests.pipelines import helpers
from tests.robustness import tiny_run


def test_non_finite_or_float16_overflowing_features_are_skipped_with_the_reason(tmp_path):
    """One image's features are NaN, one's +Inf, one's 1e6 (beyond float16: it used to stop the whole run with
    the ValueError of serialize_example): those three are skipped and named, every other image is written."""
    paths = helpers.write_images(str(tmp_path / "images"), 12)
    records = helpers.make_records(paths, split_of=lambda i: "train")
    poison = {3: np.nan, 6: np.inf, 10: 1e6}

    def load(path, size):  # the real decoder, then the image's index written into its first pixel
        pixels = load_and_resize(path, size)
        pixels[0, 0] = paths.index(path)
        return pixels

    def encoder(images):  # the fake encoder, poisoning the features of the chosen images
        out = helpers.fake_encoder(images)
        for row, image in enumerate(images):
            out[row, 0, 0] = poison.get(int(image[0, 0, 0]), out[row, 0, 0])
        return out

    out = str(tmp_path / "features")
    manifest = extract_features(records, encoder, helpers.ENCODER_INFO, helpers.vocabulary(), out,
                                max_caption_length=6, shard_size=4, batch_size=3, progress=False, load_image=load)
    reasons = {item["image_id"]: item["reason"] for item in manifest["skipped"]}
    assert reasons == {"img003": "non-finite features from the encoder",
                       "img006": "non-finite features from the encoder",
                       "img010": "features overflow float16 (|x| > 65504) from the encoder"}
    assert all(item["path"] == paths[int(item["image_id"][3:])] for item in manifest["skipped"])
    assert manifest["splits"]["train"]["images"] == 12 - 3
    assert manifest["skipped_counts"] == {"non-finite features from the encoder": 2,
                                          "features overflow float16": 1}


class _FileSizeLimit:
    """Lowers the process file-size limit (RLIMIT_FSIZE) inside a `with`: every write() past `limit` bytes of a file
    fails (EFBIG, "File too large"), as on a full disk (ENOSPC): the same failed write() half-way through a file,
    without root or a real full file system. SIGXFSZ is ignored meanwhile, so the write fails instead of the
    process being killed."""

    def __init__(self, limit: int):
        self.limit = limit

    def __enter__(self):
        self.saved = resource.getrlimit(resource.RLIMIT_FSIZE)
        self.handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.saved[1]))
        return self

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self.saved)
        signal.signal(signal.SIGXFSZ, self.handler)
        return False


def _files_digest(pattern: str) -> dict[str, str]:
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in sorted(glob.glob(pattern))}


def test_disk_full_while_writing_a_shard(tmp_path):
    """Extraction on a disk that fills up (1500-byte file limit: the first 1.6 KB shard cannot be written): the
    run stops with TensorFlow's error naming the temporary shard; no file with a final name is half-written; the
    rerun (space freed) ends with the same files as an uninterrupted run."""
    paths = helpers.write_images(str(tmp_path / "images"), 24)
    records = helpers.make_records(paths)
    kwargs = dict(max_caption_length=6, shard_size=5, batch_size=3, progress=False)
    whole, full = str(tmp_path / "whole"), str(tmp_path / "full")
    extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), whole, **kwargs)
    too_large = rf"{re.escape(full)}/\S+\.tfrecord\.tmp; File too large"
    with _FileSizeLimit(1500), pytest.raises(tf.errors.OpError, match=too_large):
        extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), full, **kwargs)
    assert not glob.glob(os.path.join(full, "*.tfrecord")) and not os.path.exists(os.path.join(full, "manifest.json"))
    extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), full, **kwargs)
    assert sorted(os.listdir(full)) == sorted(os.listdir(whole))
    for name in os.listdir(whole):
        assert open(os.path.join(full, name), "rb").read() == open(os.path.join(whole, name), "rb").read(), name


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """The trainer's checkpoint (model, Adam slots, RNG states, progress) saved as epoch 1, then the epoch-2 save
    fails half-way: the error names the file, ckpt-1 stays the latest checkpoint byte for byte and restores into a
    fresh model with every object matched and the epoch-1 values. (The whole train -> fail -> resume loop is the
    slow test below.)"""
    from sat_tf.training import workdir as wd

    model_config, train_config, _ = tiny_run.tiny_configs("", epochs=2)
    model_config = dataclasses.replace(model_config, vocab_size=40, feature_dim=112)
    directory = str(tmp_path / "checkpoints")

    def checkpointed():
        model = trainer.build_model(model_config, train_config)
        progress = Progress()
        return model, progress, wd.checkpoint_for(model, model.optimizer, **progress.variables())

    model, progress, checkpoint = checkpointed()
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
    progress.epoch.assign(1)
    manager.save(checkpoint_number=1)
    epoch1 = [v.numpy().copy() for v in model.weights]
    digests, state = _files_digest(os.path.join(directory, "ckpt-1*")), open(os.path.join(directory, "checkpoint"),
                                                                             "rb").read()
    for v in model.trainable_weights:  # what epoch 2 would have changed
        v.assign(v + 1.0)
    progress.epoch.assign(2)
    too_large = rf"{re.escape(directory)}/ckpt-2\S*; File too large"
    with _FileSizeLimit(4096), pytest.raises(tf.errors.OpError, match=too_large):
        manager.save(checkpoint_number=2)
    assert tf.train.latest_checkpoint(directory).endswith("ckpt-1")
    assert _files_digest(os.path.join(directory, "ckpt-1*")) == digests
    assert open(os.path.join(directory, "checkpoint"), "rb").read() == state
    assert not glob.glob(os.path.join(directory, "ckpt-2.*")), os.listdir(directory)

    fresh, fresh_progress, fresh_checkpoint = checkpointed()
    fresh_checkpoint.restore(tf.train.CheckpointManager(fresh_checkpoint, directory, max_to_keep=2)
                             .latest_checkpoint).assert_existing_objects_matched()
    assert int(fresh_progress.epoch) == 1
    for a, b in zip(epoch1, fresh.weights):
        np.testing.assert_array_equal(a, b.numpy())
    manager.save(checkpoint_number=2)  # space freed: the same manager saves again
    assert tf.train.latest_checkpoint(directory).endswith("ckpt-2")


@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory):
    features_dir = str(tmp_path_factory.mktemp("tiny_features"))
    tiny_run.prepare_with_fake_backbone(tiny_run.tiny_configs(features_dir)[2], features_dir)
    return features_dir


@pytest.mark.slow
def test_disk_full_while_training_then_resume(tiny_features, tmp_path, monkeypatch):
    """`train` for 2 epochs whose epoch-2 checkpoint write fails half-way (file-size limit lowered to 4 KB around
    that one save): the run stops with TensorFlow's error naming the file; ckpt-1 stays the latest checkpoint, byte
    for byte; a rerun resumes from it and finishes epoch 2. (~50 s on 2 busy cores: two train() calls.)"""
    workdir = str(tmp_path / "w")
    configs = tiny_run.tiny_configs(tiny_features, epochs=2)
    real_save = tf.train.CheckpointManager.save
    failed = []

    def save(self, checkpoint_number=None, **kwargs):
        if os.path.basename(self.directory) != "checkpoints" or checkpoint_number != 2:
            return real_save(self, checkpoint_number=checkpoint_number, **kwargs)
        failed.append((_files_digest(os.path.join(self.directory, "ckpt-1*")),
                       open(os.path.join(self.directory, "checkpoint"), "rb").read()))
        with _FileSizeLimit(4096):
            return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    checkpoints = os.path.join(workdir, "checkpoints")
    with pytest.raises(tf.errors.OpError, match=rf"{re.escape(checkpoints)}/ckpt-2\S*; File too large"):
        trainer.train(workdir, *configs, verbose=0, final_evaluation=False, tensorboard=False, log=lambda line: None)
    assert failed, "the epoch-2 save was never attempted"
    digests, state = failed[0]
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-1")
    assert _files_digest(os.path.join(checkpoints, "ckpt-1*")) == digests
    assert open(os.path.join(checkpoints, "checkpoint"), "rb").read() == state
    assert not glob.glob(os.path.join(checkpoints, "ckpt-2.*")), os.listdir(checkpoints)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)  # space freed
    lines = []
    result = trainer.train(workdir, *configs, verbose=0, final_evaluation=False, tensorboard=False,
                           log=lines.append)
    assert any(line.startswith("resuming from") and "ckpt-1 " in line for line in lines), lines
    assert result.epochs_done == 1 and tf.train.latest_checkpoint(checkpoints).endswith("ckpt-2")
