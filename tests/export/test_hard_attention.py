"""Exporting a hard-attention model: the SavedModel serves its locations too; TFLite decodes it through a
soft-attention twin (identical for the default expected-context inference) and refuses the other modes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf.config import DataConfig, ModelConfig, TrainConfig
from sat_tf.export.source import source_from_models
from sat_tf.export.tflite import convert, inference_captioner, tflite_functions
from sat_tf.lite.runtime import StepDecoder
from sat_tf.models.encoder import build_encoder
from sat_tf.text.vocabulary import SPECIAL_TOKENS, Vocabulary
from sat_tf.training.workdir import build_captioner

SIZE = 64  # EfficientNet-Lite0 stage5: a 4 x 4 grid


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("efficientnet_lite0", None, None, SIZE)  # random weights: only agreement matters


def _source(encoder, hard_inference: str = "expected"):
    vocabulary = Vocabulary(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(12)])
    model_config = ModelConfig(vocab_size=vocabulary.size, feature_dim=112, embedding_dim=16, units=32,
                               attention_dim=16, dropout=0.0, attention="hard", hard_inference=hard_inference)
    keras.utils.set_random_seed(1)
    captioner = build_captioner(model_config, seed=1)
    kernel = captioner.cell.output_projection.kernel
    kernel.assign(kernel * 8.0)  # peaked distributions: no near-ties
    return source_from_models(captioner, vocabulary, model_config, TrainConfig(max_length=6),
                              DataConfig(image_size=SIZE), encoder=encoder, encoder_weights=None)


def _pixels(count=4):
    return np.random.RandomState(0).uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)


def test_soft_twin_decodes_like_the_hard_model(encoder):
    source = _source(encoder)
    twin = inference_captioner(source)
    assert twin is not source.captioner and twin.model_config.attention == "soft"
    annotations = encoder(_pixels())
    for beam_size in (1, 3):
        want = source.captioner.generate(annotations, beam_size=beam_size, max_length=7)
        got = twin.generate(annotations, beam_size=beam_size, max_length=7)
        np.testing.assert_array_equal(got["tokens"], want["tokens"])
        np.testing.assert_allclose(got["alpha"], want["alpha"], atol=1e-6)
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)


def test_hard_step_model_converts_to_builtins_and_matches(encoder):
    source = _source(encoder)
    functions = tflite_functions(source)
    model = convert({"encode": functions["encode"], "step": functions["step"]}, "float32")
    want = source.captioner.generate(encoder(_pixels()), beam_size=1, max_length=7)
    got = StepDecoder(model_content=model).greedy(_pixels(), 7)
    np.testing.assert_array_equal(got["tokens"], want["tokens"].numpy())


@pytest.mark.parametrize("mode", ["argmax", "sample"])
def test_non_deterministic_or_argmax_hard_inference_is_refused_for_tflite(encoder, mode):
    with pytest.raises(ValueError, match="hard_inference='expected' only"):
        tflite_functions(_source(encoder, mode))


@pytest.mark.slow
def test_hard_saved_model_serves_locations(encoder, tmp_path):
    from sat_tf.export.saved_model import export_saved_model, load_saved_model

    source = _source(encoder, "argmax")
    served = load_saved_model(export_saved_model(source, str(tmp_path)))
    annotations = encoder(_pixels())
    got = served.signatures["from_features"](annotations=annotations)
    want = source.captioner.generate(annotations, beam_size=3, max_length=7)
    np.testing.assert_array_equal(got["location"].numpy(), want["location"].numpy())
    np.testing.assert_array_equal(got["tokens"].numpy(), want["tokens"].numpy())
    assert got["location"].dtype == tf.int32
