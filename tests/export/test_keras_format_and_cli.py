"""The .keras export loads back into identical models, and `python -m sat_tf.export` is a thin shell over the
library functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.config import load_config
from sat_tf.export.__main__ import main, parse_args
from sat_tf.export.keras_format import export_keras, load_keras
from sat_tf.images.tf_decode import decode_images
from tests.export.conftest import IMAGE_SIZE, MAX_LENGTH


def test_keras_files_load_into_identical_models(source, images, tmp_path):
    paths = export_keras(source, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["captioner.keras", "config.json", "encoder.keras", "vocab.txt"]
    encoder, captioner, vocabulary = load_keras(str(tmp_path))
    assert vocabulary == source.vocabulary and captioner.get_config() == source.captioner.get_config()
    pixels = decode_images(tf.constant(images), IMAGE_SIZE)
    annotations = source.encoder(pixels)
    np.testing.assert_array_equal(encoder(pixels).numpy(), annotations.numpy())
    for beam_size in (1, 3):
        want = source.captioner.generate(annotations, beam_size=beam_size, max_length=MAX_LENGTH + 1)
        got = captioner.generate(annotations, beam_size=beam_size, max_length=MAX_LENGTH + 1)
        for name in want:
            np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(), err_msg=name)
    assert load_config(paths["config"])["model"] == source.model_config


def test_cli_flags():
    args = parse_args(["--workdir", "w", "--out", "o", "--formats", "keras, tflite", "--beam-size", "5"])
    assert args.formats == ["keras", "tflite"] and args.beam_size == 5 and args.which == "best"
    with pytest.raises(SystemExit):
        parse_args(["--workdir", "w", "--out", "o", "--formats", "onnx"])


def test_cli_writes_keras_export_with_config(workdir, tmp_path, capsys):
    assert main(["--workdir", workdir, "--out", str(tmp_path), "--formats", "keras", "--which", "latest",
                 "--name", "demo"]) == 0
    config = json.load(open(tmp_path / "demo_keras" / "config.json"))
    assert config["export"]["format"] == "keras" and config["export"]["checkpoint"].endswith("ckpt-1")
    assert "demo_keras" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_all_formats_in_a_fresh_process(workdir, tmp_path):
    """The full command as a user runs it (about a minute): SavedModel, 6 TFLite files and the Keras files."""
    subprocess.run([sys.executable, "-m", "sat_tf.export", "--workdir", workdir, "--out", str(tmp_path),
                    "--which", "latest", "--beam-size", "2"], check=True, cwd=tmp_path,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert json.load(open(tmp_path / "sat_tf" / "1" / "assets" / "config.json"))["export"]["beam_size"] == 2
    assert len([f for f in os.listdir(tmp_path / "sat_tf_tflite") if f.endswith(".tflite")]) == 6
    assert os.path.isfile(tmp_path / "sat_tf_keras" / "captioner.keras")
