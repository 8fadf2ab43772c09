"""In-graph image decoding (sat_tf/images/tf_decode.py) gives the Pillow pipeline's pixels; the strict decoder refuses
bad bytes with an InvalidArgumentError that names the input and the problem, and the per-row decoder (`decode_rows`)
fails only the bad rows of a batch, with the reason."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sat_tf.images.load import load_and_resize, load_image
from sat_tf.images.tf_decode import decode_image, decode_images, decode_rows
from tests.export.conftest import encode_image, sample_images, synthetic_photo

SIZE = 64


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """Eight encoded test images in five formats and several sizes (the export tests' images)."""
    return sample_images()


def _photo(height=90, width=130, seed=0) -> np.ndarray:
    return synthetic_photo(np.random.RandomState(seed), height, width)


def _animated(fmt: str, **kwargs) -> bytes:
    import io

    frames = [Image.fromarray(_photo(seed=1)), Image.fromarray(_photo(seed=2))]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], **kwargs)
    return buffer.getvalue()


def _with_alpha(array: np.ndarray) -> np.ndarray:
    alpha = np.linspace(0, 255, array.shape[1]).astype(np.uint8)[None, :].repeat(array.shape[0], 0)
    return np.dstack([array, alpha])


CASES = {
    "jpeg": lambda: encode_image(_photo(), "JPEG", quality=90),
    "jpeg 1/4 scale in the DCT (Pillow draft)": lambda: encode_image(_photo(400, 700), "JPEG"),
    "jpeg grayscale": lambda: encode_image(_photo()[:, :, 0], "JPEG"),
    "jpeg cmyk": lambda: encode_image(Image.fromarray(_photo()).convert("CMYK"), "JPEG"),
    "png": lambda: encode_image(_photo(), "PNG"),
    "png rgba over white": lambda: encode_image(_with_alpha(_photo()), "PNG"),
    "png gray + alpha": lambda: encode_image(Image.fromarray(_with_alpha(_photo())).convert("LA"), "PNG"),
    "png palette + tRNS": lambda: encode_image(Image.fromarray(_photo()).convert("P"), "PNG", transparency=5),
    "png 16-bit gray": lambda: encode_image(_photo()[:, :, 0].astype(np.uint16) * 150 + 999, "PNG"),
    "png 1x1": lambda: encode_image(_photo()[:1, :1], "PNG"),
    "gif first frame": lambda: _animated("GIF"),
    "bmp": lambda: encode_image(_photo(), "BMP"),
    "webp lossy": lambda: encode_image(_photo(), "WEBP", quality=80),
    "webp rgba": lambda: encode_image(_with_alpha(_photo()), "WEBP", lossless=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pixels_equal_the_pillow_pipeline(case):
    data = CASES[case]()
    np.testing.assert_array_equal(decode_image(data).numpy(), load_image(data))  # full resolution, uint8
    np.testing.assert_array_equal(np.round(decode_image(data, SIZE).numpy()).astype(np.uint8),
                                  load_and_resize(data, SIZE))


def _jpeg_with_orientation(orientation: int, big_endian: bool) -> bytes:
    """A JPEG whose APP1 EXIF segment holds IFD0 with a make tag and the orientation tag, in either byte order."""
    order = ">" if big_endian else "<"
    make = b"Camera\x00\x00"
    # TIFF header, IFD0 with 2 entries (make as an offset to ASCII data, orientation as a SHORT), next-IFD 0.
    ifd = struct.pack(order + "H", 2)
    ifd += struct.pack(order + "HHII", 0x010F, 2, len(make), 8 + 2 + 2 * 12 + 4)
    ifd += struct.pack(order + "HHI", 0x0112, 3, 1) + struct.pack(order + "HH", orientation, 0)
    tiff = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(order + "I", 8) + ifd + b"\0" * 4 + make
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    jpeg = encode_image(_photo(70, 110), "JPEG")  # starts with SOI + APP0 (JFIF)
    return jpeg[:2] + app1 + jpeg[2:]


@pytest.mark.parametrize("big_endian", [False, True], ids=["II", "MM"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(orientation, big_endian):
    data = _jpeg_with_orientation(orientation, big_endian)
    ours, pillow = decode_image(data).numpy(), load_image(data)
    expected_shape = (70, 110, 3) if orientation <= 4 else (110, 70, 3)
    assert pillow.shape == expected_shape
    np.testing.assert_array_equal(ours, pillow)


def test_batched_eager_and_dataset_map_agree(images):
    batch = decode_images(tf.constant(images), SIZE).numpy()  # (B, S, S, 3)
    mapped = np.stack(list(tf.data.Dataset.from_tensor_slices(images).map(
        lambda data: decode_image(data, SIZE)).as_numpy_iterator()))
    assert batch.shape == (len(images), SIZE, SIZE, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, mapped)
    for i, data in enumerate(images):
        np.testing.assert_array_equal(np.round(batch[i]).astype(np.uint8), load_and_resize(data, SIZE))


BAD = {
    "empty": (b"", r"image_bytes\[1\]: empty \(0 bytes\)"),
    "text": (b"<html>not an image</html>", r"image_bytes\[1\]: not a JPEG, PNG, GIF, BMP or WebP image \(first "
                                           r"bytes: \[60 104 116"),
    "tiff": (lambda: encode_image(_photo(), "TIFF"), r"image_bytes\[1\]: TIFF is not supported"),
    "animated webp": (lambda: _animated("WEBP", lossless=True), r"image_bytes\[1\]: animated WebP is not supported"),
    "truncated jpeg": (lambda: encode_image(_photo(), "JPEG")[:600], r"Invalid JPEG data"),
    "truncated png": (lambda: encode_image(_photo(), "PNG")[:200], r"Invalid PNG data"),
    "png header claims 100000 x 100000": (
        lambda: (lambda d: d[:16] + struct.pack(">II", 100000, 100000) + d[24:])(encode_image(_photo(), "PNG")),
        r"image_bytes\[1\]: too large: 100000 x 100000 pixels"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_bytes_raise_invalid_argument_naming_the_problem(case):
    data, message = BAD[case]
    data = data() if callable(data) else data
    good = encode_image(_photo(), "PNG")
    decode = tf.function(lambda x: decode_images(x, SIZE))  # as inside the SavedModel
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        decode(tf.constant([good, data]))
    assert decode(tf.constant([good, good])).shape == (2, SIZE, SIZE, 3)  # and the next request works


def test_max_pixels_guard_reads_every_format_header():
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        data = encode_image(_photo(90, 130), fmt)
        assert decode_image(data, SIZE, max_pixels=90 * 130).shape == (SIZE, SIZE, 3)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"too large: 130 x 90 pixels"):
            decode_image(data, SIZE, max_pixels=90 * 130 - 1)


def test_corrupted_files_raise_invalid_argument_and_never_crash_the_process():
    """Flipped bytes, truncations and garbage after a valid signature, for every format (a server must survive)."""
    rng = np.random.RandomState(0)
    valid = _valid_encodings()
    decode = tf.function(lambda x: decode_images(x, 32))
    outcomes = {"decoded": 0, "refused": 0}
    for i in range(120):
        data = _mangled(valid[i % len(valid)], i, rng)
        try:
            assert decode(tf.constant([bytes(data)])).shape == (1, 32, 32, 3)
            outcomes["decoded"] += 1
        except tf.errors.InvalidArgumentError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 40, outcomes


# Per-row decoding (`decode_rows`, what the image signatures run) ----------------------------------------------------

ROW_ERRORS = {  # the per-row answer to each of BAD
    "empty": "empty (0 bytes)",
    "text": "not an image (JPEG, PNG, GIF, BMP or WebP expected)",
    "tiff": "TIFF is not supported by the in-graph decoder; send JPEG or PNG",
    "animated webp": "animated WebP is not supported; send a still image (JPEG, PNG or a still WebP)",
    "truncated jpeg": "truncated JPEG",
    "truncated png": "truncated PNG",
    "png header claims 100000 x 100000": "too large: 100000 x 100000 pixels is more than max_pixels=250000000",
}
rows_at = tf.function(lambda x: decode_rows(x, [SIZE, 32]), input_signature=[tf.TensorSpec([None], tf.string)])
strict_at = {size: tf.function(lambda x, size=size: decode_image(x, size),
                               input_signature=[tf.TensorSpec([], tf.string)]) for size in (SIZE, 32)}


def test_decode_rows_gives_decode_image_pixels_with_or_without_bad_rows():
    """The good rows' pixels are `decode_image`'s to the bit, at every size, whether the batch decodes as one
    element (all good) or row by row (a bad row present)."""
    good = [CASES[case]() for case in CASES]
    for batch in (good, [b""] + good[:5] + [b"\xff\xd8\xff junk"] + good[5:]):
        out = rows_at(tf.constant(batch))
        rows = out.rows.numpy()
        assert list(rows) == [i for i, data in enumerate(batch) if data in good]
        assert [bool(e) for e in out.errors.numpy()] == [i not in rows for i in range(len(batch))]
        for k, i in enumerate(rows):
            for images, size in zip(out.images, (SIZE, 32)):
                np.testing.assert_array_equal(images[k].numpy(), strict_at[size](batch[i]).numpy())


@pytest.mark.parametrize("case", list(BAD))
def test_decode_rows_names_each_bad_row_and_decodes_the_others(case):
    data, _ = BAD[case]
    data = data() if callable(data) else data
    good = encode_image(_photo(), "PNG")
    out = rows_at(tf.constant([good, good, data, good]))
    assert [e.decode() for e in out.errors.numpy()] == ["", "", f"image 2: {ROW_ERRORS[case]}", ""]
    assert list(out.rows.numpy()) == [0, 1, 3] and out.images[0].shape == (3, SIZE, SIZE, 3)


def test_decode_rows_of_nothing_and_of_only_bad_rows():
    out = rows_at(tf.constant([], tf.string))
    assert out.errors.shape == (0,) and out.rows.shape == (0,) and out.images[0].shape == (0, SIZE, SIZE, 3)
    out = rows_at(tf.constant([b"", b"GIF89a"]))
    assert [e.decode() for e in out.errors.numpy()] == ["image 0: empty (0 bytes)", "image 1: truncated GIF"]
    assert out.rows.shape == (0,) and out.images[1].shape == (0, 32, 32, 3)


def test_decode_rows_fails_exactly_the_rows_decode_image_refuses():
    """Flipped bytes, truncations and garbage after a valid signature in one batch: never an exception, and a row
    fails exactly where the strict decoder refuses the same bytes alone."""
    rng = np.random.RandomState(1)
    valid = _valid_encodings()
    batch = []
    for i in range(48):
        data = _mangled(valid[i % len(valid)], i, rng)
        batch.append(bytes(data))
    out = tf.function(lambda x: decode_rows(x, [32]))(tf.constant(batch))
    refused = []
    for i, data in enumerate(batch):
        try:
            pixels = strict_at[32](data).numpy()  # (32, 32, 3)
        except tf.errors.InvalidArgumentError:
            refused.append(i)
            assert out.errors.numpy()[i].startswith(f"image {i}: ".encode()), out.errors.numpy()[i]
            continue
        assert i in out.rows.numpy(), (i, out.errors.numpy()[i])
        np.testing.assert_array_equal(out.images[0][list(out.rows.numpy()).index(i)].numpy(), pixels)
    assert sorted(set(range(len(batch))) - set(out.rows.numpy())) == refused and len(refused) > 10


def _valid_encodings():
    """One 40x50 photo in every format the decoder takes."""
    return [encode_image(_photo(40, 50, seed=3), fmt, **kwargs) for fmt, kwargs in
            [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {}), ("WEBP", {"lossless": True})]]


def _mangled(valid: bytes, i: int, rng) -> bytearray:
    """Case i % 3 of a damaged file: flipped bytes, a truncation, or garbage after the first 16 bytes."""
    data = bytearray(valid)
    if i % 3 == 0:
        for _ in range(rng.randint(1, 20)):
            data[rng.randint(0, len(data))] = rng.randint(0, 256)
    elif i % 3 == 1:
        data = data[:rng.randint(1, len(data))]
    else:
        data = data[:16] + bytearray(rng.randint(0, 256, rng.randint(0, 3000)).astype(np.uint8).tobytes())
    return data
