"""TFLite models: builtins only, every variant runs in the LiteRT interpreter, and in float32 both the one-call
model and the app-side loop give the SavedModel's token ids (greedy, and beam search for the step model)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from sat_tf.export.tflite import MODELS, VARIANTS, median_seconds, op_names
from sat_tf.images.tf_decode import decode_images
from sat_tf.lite.runtime import StepDecoder, TFLiteCaptioner
from sat_tf.text.vocabulary import Vocabulary
from tests.export.conftest import IMAGE_SIZE, MAX_LENGTH

T = MAX_LENGTH + 1


@pytest.fixture(scope="module")
def pixels(images) -> np.ndarray:
    """What the app feeds the model: the decoded, squashed images (B, S, S, 3) float32 0..255."""
    return decode_images(tf.constant(images), IMAGE_SIZE).numpy()


def _artifact(tflite_export, model, variant):
    (found,) = [a for a in tflite_export[1] if a.model == model and a.variant == variant]
    return found


def test_files_vocabulary_and_config_beside_the_models(tflite_export, source):
    directory, artifacts = tflite_export
    assert sorted(os.listdir(directory)) == sorted(
        ["config.json", "vocab.txt"] + [f"{m}_{v}.tflite" for m in MODELS for v in VARIANTS])
    assert Vocabulary.load(os.path.join(directory, "vocab.txt")) == source.vocabulary
    config = json.load(open(os.path.join(directory, "config.json")))
    assert config["export"]["format"] == "tflite"
    assert config["export"]["input"]["shape"] == [-1, IMAGE_SIZE, IMAGE_SIZE, 3]
    sizes = {a.variant: a.size_bytes for a in artifacts if a.model == "captioner"}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]  # weights in 1, 2 and 4 bytes


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", list(MODELS))
def test_builtins_only_and_runs_in_litert(tflite_export, pixels, model, variant):
    artifact = _artifact(tflite_export, model, variant)
    ops = op_names(artifact.path)
    assert not [op for op in ops if op.startswith("Flex")], ops
    assert "WHILE" in ops if model == "captioner" else "WHILE" not in ops
    interpreter = Interpreter(model_path=artifact.path)
    assert sorted(interpreter.get_signature_list()) == sorted(MODELS[model])
    if model == "captioner":
        out = TFLiteCaptioner(artifact.path)(pixels[:3])
    else:
        out = StepDecoder(artifact.path).greedy(pixels[:3], T)
    assert out["tokens"].shape == (3, T) and out["alpha"].shape == (3, T, 36)
    assert out["tokens"].min() >= 0 and out["tokens"].max() < 30
    assert np.isfinite(out["log_probs"]).all() and np.isfinite(out["alpha"]).all()


def test_float32_one_call_model_equals_saved_model_greedy(tflite_export, served, images, pixels):
    expected = served.signatures["greedy"](image_bytes=tf.constant(images))
    got = TFLiteCaptioner(_artifact(tflite_export, "captioner", "float32").path)(pixels)
    np.testing.assert_array_equal(got["tokens"], expected["tokens"].numpy())
    np.testing.assert_array_equal(got["lengths"], expected["lengths"].numpy())
    np.testing.assert_allclose(got["alpha"], expected["alpha"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["log_probs"], expected["log_probs"].numpy(), rtol=1e-4, atol=1e-4)


def test_float32_step_model_equals_saved_model_greedy_and_beam(tflite_export, served, images, pixels):
    decoder = StepDecoder(_artifact(tflite_export, "decoder_steps", "float32").path)
    greedy = served.signatures["greedy"](image_bytes=tf.constant(images))
    got = decoder.greedy(pixels, T)
    np.testing.assert_array_equal(got["tokens"], greedy["tokens"].numpy())
    np.testing.assert_allclose(got["alpha"], greedy["alpha"].numpy(), atol=1e-5)
    beam = served.signatures["serving_default"](image_bytes=tf.constant(images))  # beam size 3
    got = decoder.beam_search(pixels, 3, T)
    np.testing.assert_array_equal(got["tokens"][:, 0], beam["tokens"].numpy())
    np.testing.assert_allclose(got["scores"][:, 0], beam["scores"].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["alpha"][:, 0], beam["alpha"].numpy(), atol=1e-5)


def test_app_side_beam_search_equals_the_graph_beam_search_on_every_beam(tflite_export, source, pixels):
    """All K beams, their order and scores, with a length penalty: the numpy loop is sat_tf's beam search."""
    decoder = StepDecoder(_artifact(tflite_export, "decoder_steps", "float32").path)
    annotations = source.encoder(pixels)
    expected = source.captioner.generate(annotations, beam_size=4, max_length=T, length_penalty=0.7,
                                         return_all_beams=True)
    got = decoder.beam_search(pixels, 4, T, length_penalty=0.7)
    for name in ("tokens", "lengths"):
        np.testing.assert_array_equal(got[name], expected[name].numpy(), err_msg=name)
    for name in ("scores", "log_probs"):
        np.testing.assert_allclose(got[name], expected[name].numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_dynamic_batch(tflite_export, pixels):
    model = TFLiteCaptioner(_artifact(tflite_export, "captioner", "float32").path)
    both = model(pixels[:4])
    for i in range(4):
        np.testing.assert_array_equal(model(pixels[i:i + 1])["tokens"][0], both["tokens"][i])


def test_quantised_variants_mostly_agree_with_float32(tflite_export, pixels):
    """float16 and dynamic-range int8 are approximations; on this decisive model they keep the captions."""
    reference = TFLiteCaptioner(_artifact(tflite_export, "captioner", "float32").path)(pixels)["tokens"]
    for variant in ("float16", "int8"):
        got = TFLiteCaptioner(_artifact(tflite_export, "captioner", variant).path)(pixels)["tokens"]
        agreement = np.mean(np.all(got == reference, axis=1))
        assert agreement >= 0.75, (variant, agreement)


def test_top_k_follows_tf_math_top_k_including_ties():
    from sat_tf.lite.search import top_k

    rng = np.random.RandomState(0)
    values = np.round(rng.randn(50, 40), 1).astype(np.float32)  # many exact ties
    values[3] = 0.0
    for k in (1, 3, 7, 40):
        np.testing.assert_array_equal(top_k(values, k), tf.math.top_k(values, k).indices.numpy())


def test_median_seconds_warms_up_once_and_takes_the_median():
    """The report's latency: one untimed warm-up call, then the median of the timed ones."""
    delays = iter([0.6, 0.0, 0.3, 0.0])  # warm-up (not timed), then three timed calls
    calls = []

    def call():
        calls.append(1)
        time.sleep(next(delays))

    seconds = median_seconds(call, runs=3)
    assert len(calls) == 4
    assert 0.0 <= seconds < 0.25  # the median of ~0, ~0.3, ~0: the warm-up's 0.6 s is not counted
