"""Exports decode with the n-gram blocking they were built with: the SavedModel's signatures and the one-call TFLite
model (builtin ops only) give the in-memory model's blocked tokens, the numpy app loop over `encode` / `step`
blocks by the same rule, config.json records the value (under `export` and as the `train` config's), and
`python -m sat_tf.export --no-repeat-ngram-size` reaches both exporters (default: the work dir's value).

The fixture model's captions are random draws from 22 words, so several repeat a word: blocking unigrams (n = 1)
changes them, which is what makes the comparisons say something.

Shapes: B images, K beams, T max tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.config import load_config
from sat_tf.images.tf_decode import decode_images
from sat_tf.metrics.repetition import has_repeated_ngram
from tests.export.conftest import IMAGE_SIZE, MAX_LENGTH

T = MAX_LENGTH + 1
N = 1  # no word twice


@pytest.fixture(scope="module")
def pixels(images) -> np.ndarray:
    return decode_images(tf.constant(images), IMAGE_SIZE).numpy()  # (B, S, S, 3)


@pytest.fixture(scope="module")
def annotations(source, pixels):
    return source.encoder(pixels)  # (B, L, D)


@pytest.fixture(scope="module")
def blocked(source, annotations) -> dict:
    """The in-memory model's greedy and beam-3 decoding with blocking, and proof that blocking changed them."""
    out = {k: source.captioner.generate(annotations, beam_size=k, max_length=T, no_repeat_ngram_size=N)
           for k in (1, 3)}
    free = source.captioner.generate(annotations, beam_size=1, max_length=T)["tokens"].numpy()
    assert any(has_repeated_ngram(source.vocabulary.decode(row).split(), N) for row in free), \
        "no fixture caption repeats a word: blocking would change nothing"
    for k in (1, 3):
        assert not any(has_repeated_ngram(c.split(), N) for c in source.vocabulary.decode(out[k]["tokens"].numpy()))
    return out


@pytest.mark.slow
def test_saved_model_signatures_block_as_the_python_decoder(source, images, annotations, blocked, tmp_path):
    """The whole export round trip (about 40 s): every signature, the captions and config.json."""
    from sat_tf.export.saved_model import export_saved_model, load_saved_model, read_export_config

    path = export_saved_model(source, str(tmp_path), name="blocked", beam_size=3, no_repeat_ngram_size=N)
    served = load_saved_model(path)
    for signature, k in (("serving_default", 3), ("greedy", 1)):
        got = served.signatures[signature](image_bytes=tf.constant(images))
        np.testing.assert_array_equal(got["tokens"].numpy(), blocked[k]["tokens"].numpy(), err_msg=signature)
        assert [c.decode() for c in got["captions"].numpy()] == source.vocabulary.decode(blocked[k]["tokens"].numpy())
    got = served.signatures["from_features"](annotations=annotations)
    np.testing.assert_array_equal(got["tokens"].numpy(), blocked[3]["tokens"].numpy())
    config = read_export_config(path)
    assert config["export"]["no_repeat_ngram_size"] == N and config["train"]["no_repeat_ngram_size"] == N
    assert load_config(os.path.join(path, "assets", "config.json"))["train"].no_repeat_ngram_size == N
    assert source.train_config.no_repeat_ngram_size == 0  # the work dir's own config is untouched


def test_tflite_caption_and_app_loop_block_as_the_python_decoder(source, pixels, annotations, blocked, tmp_path):
    from sat_tf.export.tflite import export_tflite, op_names
    from sat_tf.lite.runtime import StepDecoder, TFLiteCaptioner

    artifacts = export_tflite(source, str(tmp_path), variants=("float32",), measure_latency=False, verbose=False,
                              no_repeat_ngram_size=N)
    paths = {a.model: a.path for a in artifacts}
    assert not [op for op in op_names(paths["captioner"]) if op.startswith("Flex")]
    got = TFLiteCaptioner(paths["captioner"])(pixels)
    np.testing.assert_array_equal(got["tokens"], blocked[1]["tokens"].numpy())
    np.testing.assert_array_equal(got["lengths"], blocked[1]["lengths"].numpy())
    np.testing.assert_allclose(got["log_probs"], blocked[1]["log_probs"].numpy(), rtol=1e-4, atol=1e-4)

    steps = StepDecoder(paths["decoder_steps"])
    np.testing.assert_array_equal(steps.greedy(pixels, T, no_repeat_ngram_size=N)["tokens"],
                                  blocked[1]["tokens"].numpy())
    want = source.captioner.generate(annotations, beam_size=4, max_length=T, length_penalty=0.7,
                                     return_all_beams=True, no_repeat_ngram_size=N)
    beams = steps.beam_search(pixels, 4, T, length_penalty=0.7, no_repeat_ngram_size=N)
    for name in ("tokens", "lengths"):
        np.testing.assert_array_equal(beams[name], want[name].numpy(), err_msg=name)
    np.testing.assert_allclose(beams["scores"], want["scores"].numpy(), rtol=1e-4, atol=1e-4)

    config = json.load(open(os.path.join(tmp_path, "config.json")))
    assert config["export"]["no_repeat_ngram_size"] == N and config["train"]["no_repeat_ngram_size"] == N
    assert "no repeated 1-gram" in config["export"]["decoding"]


def test_recorded_train_config_carries_the_exports_blocking(source):
    from sat_tf.export.source import export_config, with_decoding

    payload = export_config(with_decoding(source, 2), "saved_model", no_repeat_ngram_size=2)
    assert payload["train"]["no_repeat_ngram_size"] == 2 and payload["export"]["no_repeat_ngram_size"] == 2
    assert payload["train"] == {**dataclasses.asdict(source.train_config), "no_repeat_ngram_size": 2}
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        with_decoding(source, -1)


@pytest.mark.parametrize("flag, want", [([], 0), (["--no-repeat-ngram-size", "3"], 3)])
def test_export_cli_flag_reaches_both_exporters(source, monkeypatch, tmp_path, flag, want):
    import sat_tf.export.saved_model as saved_model
    import sat_tf.export.source as export_source
    import sat_tf.export.tflite as tflite
    from sat_tf.export.__main__ import main

    seen = {}
    monkeypatch.setattr(export_source, "load_ensemble_source", lambda *args, **kwargs: source)
    monkeypatch.setattr(saved_model, "export_saved_model",
                        lambda *args, **kwargs: seen.setdefault("saved_model", kwargs) and str(tmp_path / "1"))
    monkeypatch.setattr(tflite, "export_tflite", lambda *args, **kwargs: seen.setdefault("tflite", kwargs))
    assert main(["--workdir", "w", "--out", str(tmp_path), "--formats", "saved_model,tflite", *flag]) == 0
    assert seen["saved_model"]["no_repeat_ngram_size"] == want and seen["tflite"]["no_repeat_ngram_size"] == want


def test_export_cli_default_is_the_work_dirs_value(source, monkeypatch, tmp_path):
    import sat_tf.export.saved_model as saved_model
    import sat_tf.export.source as export_source
    from sat_tf.export.__main__ import main

    seen = {}
    recipe = dataclasses.replace(source, train_config=dataclasses.replace(source.train_config,
                                                                          no_repeat_ngram_size=2))
    monkeypatch.setattr(export_source, "load_ensemble_source", lambda *args, **kwargs: recipe)
    monkeypatch.setattr(saved_model, "export_saved_model",
                        lambda *args, **kwargs: seen.update(kwargs) or str(tmp_path / "1"))
    assert main(["--workdir", "w", "--out", str(tmp_path), "--formats", "saved_model"]) == 0
    assert seen["no_repeat_ngram_size"] == 2
    assert main(["--workdir", "w", "--out", str(tmp_path), "--formats", "saved_model",
                 "--no-repeat-ngram-size", "-1"]) == 1
