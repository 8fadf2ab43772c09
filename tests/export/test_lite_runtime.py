"""The LiteRT runtime (`sat_tf.lite`) against TensorFlow on the tiny trained model: image files -> the SavedModel's
pixels (Pillow + the numpy resize), and with the float32 export the SavedModel's captions at beam 1 (the one-call
`caption` signature) and at the export's beam size (numpy beam search over `encode` / `step`), and the Python
decoder's captions with n-gram blocking.

Shapes: B images, S image side, T max tokens, L locations.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.images.load import load_pixels
from sat_tf.images.tf_decode import decode_images
from sat_tf.lite import LiteCaptioner
from sat_tf.lite.__main__ import main
from sat_tf.metrics.repetition import has_repeated_ngram
from tests.export.conftest import FORMATS, IMAGE_SIZE, MAX_LENGTH

T = MAX_LENGTH + 1


@pytest.fixture(scope="module")
def files(images, tmp_path_factory) -> list[str]:
    """The test images as files, named by their format."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (data, fmt) in enumerate(zip(images, FORMATS)):
        path = folder / f"photo{i}.{fmt.lower()}"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def pixels(images) -> np.ndarray:
    """What the SavedModel's in-graph decoder feeds its encoder: (B, S, S, 3) float32."""
    return decode_images(tf.constant(images), IMAGE_SIZE).numpy()


def test_pixels_of_a_file_are_the_saved_models(files, pixels):
    for path, want in zip(files, pixels):
        got = load_pixels(path, IMAGE_SIZE)
        assert got.dtype == np.float32 and got.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        np.testing.assert_array_equal(got, want, err_msg=path)


def test_float32_beam_one_runs_the_one_call_model_and_gives_the_greedy_signature(tflite_export, served, images,
                                                                                   files):
    captioner = LiteCaptioner(tflite_export[0], variant="float32", beam_size=1)
    assert captioner.decoding == "caption"
    want = served.signatures["greedy"](image_bytes=tf.constant(images))
    got = captioner.caption(files)
    assert [r.caption for r in got] == [c.decode() for c in want["captions"].numpy()]
    np.testing.assert_allclose([r.log_prob for r in got], want["log_probs"].numpy(), rtol=1e-4, atol=1e-4)
    for result, alpha in zip(got, want["alpha"].numpy()):  # attention per word: (W, L), each row sums to 1
        np.testing.assert_allclose(result.alpha, alpha[:len(result.words)], atol=1e-5)
        np.testing.assert_allclose(result.alpha.sum(-1), 1.0, atol=1e-5)


def test_float32_default_beam_search_gives_the_saved_models_captions(tflite_export, served, images, files):
    captioner = LiteCaptioner(tflite_export[0], variant="float32")  # beam size 3 from config.json
    assert (captioner.beam_size, captioner.decoding, captioner.no_repeat_ngram_size) == (3, "steps", 0)
    want = served.signatures["serving_default"](image_bytes=tf.constant(images))  # exported with beam size 3
    got = captioner.caption(files, batch_size=3)
    assert [r.caption for r in got] == [c.decode() for c in want["captions"].numpy()]
    np.testing.assert_allclose([r.log_prob for r in got], want["log_probs"].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_float32_ngram_blocking_gives_the_python_decoders_captions(tflite_export, source, pixels, files, beam_size):
    annotations = source.encoder(pixels)  # (B, L, D)
    free = source.vocabulary.decode(source.captioner.generate(annotations, beam_size=beam_size,
                                                              max_length=T)["tokens"].numpy())
    assert any(has_repeated_ngram(c, 1) for c in free), "no caption repeats a word: blocking would change nothing"
    want = source.vocabulary.decode(source.captioner.generate(
        annotations, beam_size=beam_size, max_length=T, length_penalty=0.5, no_repeat_ngram_size=1)["tokens"].numpy())
    captioner = LiteCaptioner(tflite_export[0], variant="float32", beam_size=beam_size, length_penalty=0.5,
                              no_repeat_ngram_size=1)
    assert captioner.decoding == "steps"  # the one-call model blocks what the export fixed (nothing here)
    assert [r.caption for r in captioner.caption(files)] == want


def test_command_prints_the_captions_and_names_bad_files(tflite_export, served, images, files, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(images[1][:200])
    code = main(["caption", "--model", tflite_export[0], "--variant", "float32", files[0], str(bad), files[1]])
    out, err = capsys.readouterr()
    want = [c.decode() for c in served.signatures["serving_default"](image_bytes=tf.constant(images[:2]))[
        "captions"].numpy()]
    assert code == 1
    assert out.splitlines() == [f"{files[0]}\t{want[0]}", f"{files[1]}\t{want[1]}"]
    assert f"{bad}\terror: truncated image" in err and "2 image(s) captioned, 1 failed" in err
    assert os.path.basename(files[0]) not in err
