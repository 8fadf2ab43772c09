"""A bad image in a served batch fails only its own row: the image signatures answer every row, with an `error`
string per row, and the good rows get the outputs they get without the bad ones.

Bad images are the bad-image kinds of the robustness suite (`tests/robustness/image_cases.py`) plus the formats
only the in-graph decoder refuses; the caption CLI (Pillow) and the SavedModel must fail the same files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.export.conftest import MAX_LENGTH, encode_image, synthetic_photo
from tests.robustness import image_cases

L = 36  # 6 x 6 grid at 96 px
ROW_OUTPUTS = ("captions", "tokens", "lengths", "scores", "log_probs", "alpha")

# What the SavedModel says about each bad file of the robustness suite (the CLI's wording is the case's `error`).
# Files that are no bytes at all (a missing file, a directory) never reach a server: the client cannot read them.
SAVED_MODEL_ERRORS = {
    "corrupt": "corrupt PNG",
    "truncated_jpeg": "truncated JPEG",
    "truncated_png": "truncated PNG",
    "zero_bytes": "empty (0 bytes)",
    "not_an_image": "not an image (JPEG, PNG, GIF, BMP or WebP expected)",
    "decompression_bomb": "too large: 20000 x 20000 pixels is more than max_pixels=250000000",
}
NO_BYTES = {"missing_file", "directory"}
# The disagreements (docs/serving.md): Pillow captions an animated WebP's first frame, but TensorFlow's WebP decoder
# corrupts memory on animated WebP, so the SavedModel refuses it from its header; and Pillow reads TIFF.
ONLY_THE_SAVED_MODEL_REFUSES = {
    "animated_webp": "animated WebP is not supported; send a still image (JPEG, PNG or a still WebP)",
    "tiff": "TIFF is not supported by the in-graph decoder; send JPEG or PNG"}  # Pillow reads TIFF, TensorFlow not


def _photo(seed: int) -> np.ndarray:
    return synthetic_photo(np.random.RandomState(seed), 70, 90)


# Formats the in-graph decoder refuses that the robustness suite has no file for, and corruptions after a valid header.
MORE_BAD = {
    "tiff": (lambda: encode_image(_photo(1), "TIFF"),
             "TIFF is not supported by the in-graph decoder; send JPEG or PNG"),
    "heif header": (lambda: b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40,
                    "HEIF/AVIF/MP4 is not supported; send JPEG or PNG"),
    "truncated gif": (lambda: encode_image(_photo(2) // 32 * 32, "GIF")[:200], "truncated GIF"),
    "truncated bmp": (lambda: encode_image(_photo(3), "BMP")[:500], "truncated BMP"),
    "truncated webp": (lambda: encode_image(_photo(4), "WEBP")[:100], "truncated WebP"),
    "jpeg cut inside its header": (lambda: encode_image(_photo(5), "JPEG")[:40], "truncated JPEG"),
}


def _bytes_of(case: image_cases.ImageCase, case_files: dict[str, str]) -> bytes:
    with open(case_files[case.name], "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> dict[str, str]:
    """Every file of the robustness suite: {case name: path}."""
    return image_cases.write_cases(str(tmp_path_factory.mktemp("image_cases")))


@pytest.fixture(scope="module")
def good_alone(served, images):
    """`serving_default` on images 0-3, all good: the outputs a mixed batch's good rows must reproduce."""
    return {name: value.numpy() for name, value in served.signatures["serving_default"](
        image_bytes=tf.constant(images[:4])).items()}


def _check_failed_row(out: dict, row: int, message: str) -> None:
    """Row `row` of a signature's outputs failed with `message` and holds the documented filler."""
    assert out["error"][row].decode() == f"image {row}: {message}", out["error"][row]
    assert out["captions"][row] == b""
    assert out["lengths"][row] == 0 and out["scores"][row] == 0.0 and out["log_probs"][row] == 0.0
    assert not out["tokens"][row].any() and not out["alpha"][row].any()  # <pad> (0) and zeros
    assert out["tokens"].shape[1:] == (MAX_LENGTH + 1,) and out["alpha"].shape[1:] == (MAX_LENGTH + 1, L)


def _check_good_rows(out: dict, rows: list[int], want: dict) -> None:
    """The rows `rows` of `out` equal `want`'s rows 0, 1, ... to the bit, and carry no error."""
    for name in ROW_OUTPUTS:
        np.testing.assert_array_equal(out[name][rows], want[name], err_msg=name)
    assert list(out["error"][rows]) == [b""] * len(rows)


def _run(served, batch: list[bytes], signature: str = "serving_default") -> dict:
    return {name: value.numpy() for name, value in served.signatures[signature](
        image_bytes=tf.constant(batch, tf.string)).items()}


def test_the_suite_covers_every_bad_file_kind():
    """A new bad-image case in the robustness suite needs its SavedModel answer here."""
    bad = {case.name for case in image_cases.CASES if case.error}
    assert bad == set(SAVED_MODEL_ERRORS) | NO_BYTES


@pytest.mark.parametrize("name", [*SAVED_MODEL_ERRORS, "animated_webp"])
def test_each_bad_file_of_the_robustness_suite_fails_only_its_row(name, served, images, case_files, good_alone):
    bad = _bytes_of(image_cases.BY_NAME[name], case_files)
    message = {**SAVED_MODEL_ERRORS, **ONLY_THE_SAVED_MODEL_REFUSES}[name]
    out = _run(served, [images[0], images[1], bad, images[2], images[3]])
    _check_failed_row(out, 2, message)
    _check_good_rows(out, [0, 1, 3, 4], good_alone)


@pytest.mark.parametrize("name", list(MORE_BAD))
def test_formats_and_corruptions_only_the_in_graph_decoder_sees(name, served, images, good_alone):
    make, message = MORE_BAD[name]
    out = _run(served, [make(), *images[:4]])
    _check_failed_row(out, 0, message)
    _check_good_rows(out, [1, 2, 3, 4], good_alone)


def test_several_bad_rows_and_greedy(served, images, case_files):
    """Bad rows anywhere (first, middle, last), several at once; `greedy` has the same per-row contract."""
    bad = {name: _bytes_of(image_cases.BY_NAME[name], case_files) for name in ("zero_bytes", "truncated_jpeg")}
    batch = [bad["zero_bytes"], images[0], bad["truncated_jpeg"], images[1], bad["zero_bytes"]]
    for signature in ("serving_default", "greedy"):
        want = _run(served, images[:2], signature)
        out = _run(served, batch, signature)
        for row, message in ((0, "empty (0 bytes)"), (2, "truncated JPEG"), (4, "empty (0 bytes)")):
            _check_failed_row(out, row, message)
        _check_good_rows(out, [1, 3], want)


def test_an_all_bad_batch_answers_every_row(served, case_files):
    names = list(SAVED_MODEL_ERRORS)
    out = _run(served, [_bytes_of(image_cases.BY_NAME[name], case_files) for name in names])
    assert out["tokens"].shape == (len(names), MAX_LENGTH + 1)
    for row, name in enumerate(names):
        _check_failed_row(out, row, SAVED_MODEL_ERRORS[name])


def test_a_batch_of_one(served, images):
    good = _run(served, images[:1])
    assert good["error"][0] == b"" and good["captions"][0] and good["lengths"][0] > 0
    _check_good_rows(_run(served, [b"", images[0]]), [1], good)  # with a bad row: the same, to the bit
    bad = _run(served, [images[1][:300]])
    _check_failed_row(bad, 0, "truncated JPEG")
    empty = _run(served, [])
    assert empty["error"].shape == (0,) and empty["tokens"].shape == (0, MAX_LENGTH + 1)


def test_good_rows_caption_as_they_do_alone(served, images):
    """Against each image sent alone: the same tokens and caption; log-probabilities, scores and attention within
    float32 rounding (1e-6), which is all that batching guarantees on CPU with or without bad rows: the search's
    matmul kernels round differently for another number of rows (seen up to ~1e-7, in `from_features` alone)."""
    out = _run(served, [images[4], b"", images[5], b"not an image", images[6]])
    for row, image in ((0, images[4]), (2, images[5]), (4, images[6])):
        alone = _run(served, [image])
        assert out["captions"][row] == alone["captions"][0] and out["captions"][row]
        np.testing.assert_array_equal(out["tokens"][row], alone["tokens"][0])
        assert out["lengths"][row] == alone["lengths"][0]
        for name in ("log_probs", "scores", "alpha"):
            np.testing.assert_allclose(out[name][row], alone[name][0], rtol=0, atol=1e-6, err_msg=name)


_FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf

batch = list(np.load(sys.argv[2], allow_pickle=True))
out = tf.saved_model.load(sys.argv[1]).signatures["serving_default"](image_bytes=tf.constant(batch, tf.string))
print(json.dumps({"error": [e.decode() for e in out["error"].numpy()],
                  "captions": [c.decode() for c in out["captions"].numpy()],
                  "tokens": out["tokens"].numpy().tolist(), "log_probs": out["log_probs"].numpy().tolist()}))
"""


def test_reloaded_in_a_fresh_process(saved_model_dir, served, images, tmp_path):
    """A process with TensorFlow alone (no sat_tf, no Keras: as a server is) loads the export and answers a mixed
    batch as the loaded model does here."""
    batch = [images[0], b"", images[1][:300], images[2]]
    path = tmp_path / "batch.npy"
    np.save(path, np.array(batch, dtype=object), allow_pickle=True)
    result = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, saved_model_dir, str(path)], capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    want = _run(served, batch)
    assert got["error"] == ["", "image 1: empty (0 bytes)", "image 2: truncated JPEG", ""]
    assert got["captions"] == [c.decode() for c in want["captions"]]
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_array_equal(np.float32(got["log_probs"]), want["log_probs"])


def _caption_cli(workdir: str, paths: list[str]) -> dict[str, str]:
    """`python -m sat_tf.caption` (in process) on `paths`: {path: "caption" or "error: reason"}."""
    from sat_tf.caption import main as caption_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        caption_main(["--workdir", workdir, "--which", "latest", "--no-progress", *paths])
    lines = {}
    for line in (out.getvalue() + err.getvalue()).splitlines():
        path, sep, rest = line.partition("\t")
        if sep and path in paths:
            lines[path] = rest
    return lines


def test_caption_cli_and_saved_model_fail_the_same_files(workdir, served, case_files, tmp_path):
    """Every file of the robustness suite with bytes (the two 10000 x 10000 photos included) and the files of
    MORE_BAD, through the Pillow CLI and through the SavedModel in one batch: the same files fail, except the
    documented ones (docs/serving.md), which the CLI decodes and the SavedModel refuses."""
    files = {name: case_files[name] for name in (case.name for case in image_cases.CASES) if name not in NO_BYTES}
    for k, (name, (make, _)) in enumerate(MORE_BAD.items()):
        files[name] = str(tmp_path / f"more_{k}.img")
        with open(files[name], "wb") as f:
            f.write(make())
    cli = _caption_cli(workdir, list(files.values()))
    batch = []
    for path in files.values():
        with open(path, "rb") as f:
            batch.append(f.read())
    out = _run(served, batch)
    for row, (name, path) in enumerate(files.items()):
        cli_failed, served_failed = cli[path].startswith("error: "), bool(out["error"][row])
        if name in image_cases.BY_NAME:
            assert cli_failed == bool(image_cases.BY_NAME[name].error), (name, cli[path])
        if name in ONLY_THE_SAVED_MODEL_REFUSES:
            assert served_failed and not cli_failed, (name, cli[path], out["error"][row])
        else:
            assert cli_failed == served_failed, (name, cli[path], out["error"][row])


def test_a_header_that_claims_too_many_pixels_fails_before_decoding(served, images):
    """The size guard reads the header (libjpeg's header parser for a JPEG) and never decodes such a row."""
    png = encode_image(_photo(6), "PNG")
    png = png[:16] + struct.pack(">II", 100000, 100000) + png[24:]  # IHDR width, height
    jpeg = bytearray(encode_image(_photo(7), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # SOF0 height, width
    out = _run(served, [png, images[0], bytes(jpeg)])
    assert list(out["error"]) == [b"image 0: too large: 100000 x 100000 pixels is more than max_pixels=250000000",
                                  b"", b"image 2: too large: 60000 x 60000 pixels is more than max_pixels=250000000"]


def test_the_benchmark_times_both_graphs_on_the_same_captions(workdir, capsys):
    """benchmarks/serving_errors.py runs, and only after checking that both graphs caption alike."""
    from benchmarks import serving_errors

    assert serving_errors.main(["--workdir", workdir, "--which", "latest", "--batch-sizes", "1,3", "--runs",
                                "1"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row[0].strip() for row in rows[1:]] == ["1", "3"]  # after the header
    assert all(float(value) > 0 for row in rows[1:] for value in row[1:3])  # ms per call
