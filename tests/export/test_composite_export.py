"""SavedModels of composite decoders: an ensemble of work dirs over two encoders and test-time mirroring, served
through the same signatures as one model and equal to the in-memory decoder; one-Captioner formats refuse them."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.decoding.mirrored import mirrored_inputs
from sat_tf.images.tf_decode import decode_images
from sat_tf.training.workdir import load_experiment, save_experiment
from tests.export.conftest import IMAGE_SIZE, MAX_LENGTH
from tests.export.test_saved_model import OUTPUTS, _assert_same

OTHER_SIZE = 128  # the second member's encoder: the same network at 128 px, an 8x8 grid (L = 64)


@pytest.fixture(scope="module")
def other_workdir(workdir, tmp_path_factory) -> str:
    """A copy of the fixture work dir whose encoder input is 128 px: a member reading other annotations."""
    path = str(tmp_path_factory.mktemp("other") / "other")
    shutil.copytree(workdir, path)
    experiment = load_experiment(path)
    save_experiment(path, experiment.model_config, experiment.train_config,
                    dataclasses.replace(experiment.data_config, image_size=OTHER_SIZE))
    return path


def _reference(source, images, beam_size: int) -> dict:
    """The in-memory composite decoder on the in-graph pixels of every encoder input (mirrored too)."""
    photo, mirrored = [], []
    for encoder, spec in zip(source.encoders, source.encoder_specs):
        pixels = decode_images(tf.constant(images), spec.image_size)  # (B, S, S, 3)
        photo.append(encoder(pixels))
        mirrored.append(encoder(tf.reverse(pixels, axis=[2])))
    inputs = photo[0] if len(photo) == 1 else tuple(photo)
    if source.mirror:
        inputs = mirrored_inputs(tuple(photo), tuple(mirrored))
    out = source.decoder().generate(inputs, beam_size=beam_size, max_length=MAX_LENGTH + 1)
    out = {name: np.asarray(value) for name, value in out.items()}
    out["captions"] = np.array([c.encode() for c in source.vocabulary.decode(out["tokens"])], dtype=object)
    return out, photo, mirrored


def _export(source, tmp_path, name):
    from sat_tf.export.saved_model import export_saved_model, load_saved_model, read_export_config

    path = export_saved_model(source, str(tmp_path), name=name, version=1)
    return load_saved_model(path), read_export_config(path)


def test_an_ensemble_over_two_encoders_serves_as_the_in_memory_ensemble(workdir, other_workdir, images, tmp_path):
    from sat_tf.export.source import load_ensemble_source

    source = load_ensemble_source([workdir, other_workdir], "latest")
    assert [spec.image_size for spec in source.encoder_specs] == [IMAGE_SIZE, OTHER_SIZE]
    served, config = _export(source, tmp_path, "ensemble")
    want, photo, _ = _reference(source, images, 3)
    _assert_same(served.signatures["serving_default"](image_bytes=tf.constant(images)), want)
    got = served.signatures["from_features"](annotations=photo[0], annotations_1=photo[1])
    _assert_same(got, want)
    _assert_same(served.signatures["greedy"](image_bytes=tf.constant(images)), _reference(source, images, 1)[0])
    assert [m["input"] for m in config["export"]["ensemble"]["members"]] == [0, 1]
    assert [e["image_size"] for e in config["export"]["encoders"]] == [IMAGE_SIZE, OTHER_SIZE]
    assert config["export"]["signatures"]["from_features"]["inputs"] == ["annotations", "annotations_1"]
    assert "location" not in config["export"]["signatures"]["serving_default"]["outputs"]


def test_test_time_mirroring_serves_both_views(workdir, images, tmp_path):
    from sat_tf.export.source import load_ensemble_source

    source = load_ensemble_source([workdir], "latest", mirror=True)
    served, config = _export(source, tmp_path, "mirrored")
    want, photo, mirrored = _reference(source, images, 3)
    _assert_same(served.signatures["serving_default"](image_bytes=tf.constant(images)), want)
    _assert_same(served.signatures["from_features"](annotations=photo[0], annotations_mirrored=mirrored[0]), want)
    assert config["export"]["mirror"] is True
    assert config["export"]["signatures"]["from_features"]["inputs"] == ["annotations", "annotations_mirrored"]
    # the mirrored view is not ignored: decoding it alone gives other scores than the photo alone
    alone = source.captioner.generate(photo[0], beam_size=3, max_length=MAX_LENGTH + 1)
    assert np.abs(np.asarray(alone["log_probs"]) - want["log_probs"]).max() > 1e-4


def test_one_captioner_formats_refuse_composites_and_the_cli_exports_the_saved_model(workdir, other_workdir,
                                                                                      tmp_path, capsys):
    from sat_tf.export.__main__ import main as export_main
    from sat_tf.export.keras_format import export_keras
    from sat_tf.export.source import load_ensemble_source
    from sat_tf.export.tflite import export_tflite

    source = load_ensemble_source([workdir], "latest", mirror=True)
    with pytest.raises(ValueError, match="TFLite holds one Captioner.*SavedModel only"):
        export_tflite(source, str(tmp_path / "tflite"))
    with pytest.raises(ValueError, match="the Keras format holds one Captioner"):
        export_keras(source, str(tmp_path / "keras"))
    with pytest.raises(SystemExit):
        export_main(["--workdir", workdir, "--out", str(tmp_path / "x"), "--mirror", "--formats", "tflite"])
    assert "export a SavedModel only" in capsys.readouterr().err
    # a work dir whose recipe sets the beam and its length penalty: the export takes them unless told otherwise
    ranked = str(tmp_path / "ranked")
    shutil.copytree(workdir, ranked)
    with open(os.path.join(ranked, "config.json")) as f:
        recorded = json.load(f)
    recorded["train"]["length_penalty"] = 0.7
    recorded["train"]["beam_size"] = 4
    with open(os.path.join(ranked, "config.json"), "w") as f:
        json.dump(recorded, f)
    out = str(tmp_path / "cli")
    assert export_main(["--workdir", ranked, "--ensemble", other_workdir, "--which", "latest", "--out", out,
                        "--combine", "log_probability"]) == 0
    assert sorted(os.listdir(out)) == ["sat_tf"]  # no TFLite or Keras folder
    config = json.load(open(os.path.join(out, "sat_tf", "1", "assets", "config.json")))
    assert config["export"]["ensemble"]["combine"] == "log_probability"
    # without --beam-size / --length-penalty the SavedModel decodes as the work dir's recipe does
    assert config["export"]["length_penalty"] == config["train"]["length_penalty"] == 0.7
    assert config["export"]["beam_size"] == config["train"]["beam_size"] == 4
    assert set(OUTPUTS) <= set(config["export"]["signatures"]["serving_default"]["outputs"])
