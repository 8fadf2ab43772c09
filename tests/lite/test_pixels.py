"""Pixels for the TFLite models without TensorFlow (`sat_tf.images.load_pixels`): EXIF orientation, alpha and
colour handled as everywhere in sat_tf, and the numpy resize equal, bit for bit, to TensorFlow's (where TensorFlow
is installed).

Shapes: H, W image height and width, S the model's input side.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sat_tf.images.load import ImageError, load_image, load_pixels
from sat_tf.images.resize import resize_image_numpy

S = 32


def _encoded(array: np.ndarray, fmt: str, orientation: int | None = None, **kwargs) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(array))
    if orientation is not None:
        exif = image.getexif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _photo(height: int = 60, width: int = 90) -> np.ndarray:
    rng = np.random.RandomState(0)
    coarse = (rng.rand(4, 6, 3) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))  # (H, W, 3)


# EXIF orientation -> how the camera stored an upright photo (np.rot90 turns), which the reader must undo.
STORED_TURNS = {3: 2, 6: 1, 8: -1}


@pytest.mark.parametrize("orientation", sorted(STORED_TURNS))
def test_exif_orientation_is_undone(orientation):
    upright = _photo()
    stored = np.rot90(upright, STORED_TURNS[orientation])
    png = _encoded(stored, "PNG", orientation)
    np.testing.assert_array_equal(load_image(png), upright)
    np.testing.assert_array_equal(load_pixels(png, S), load_pixels(_encoded(upright, "PNG"), S))
    jpeg = load_pixels(_encoded(stored, "JPEG", orientation, quality=100), S)
    assert np.abs(jpeg - load_pixels(_encoded(upright, "JPEG", quality=100), S)).mean() < 2.0


def test_transparent_pixels_are_white_and_grayscale_is_rgb():
    clear = np.zeros((20, 20, 4), np.uint8)  # fully transparent black
    np.testing.assert_array_equal(load_pixels(_encoded(clear, "PNG"), S), np.full((S, S, 3), 255.0, np.float32))
    gray = np.full((20, 30), 77, np.uint8)
    np.testing.assert_allclose(load_pixels(_encoded(gray, "PNG"), S), 77.0, atol=1e-4)


def test_what_is_not_an_image_is_an_image_error_naming_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo")
    with pytest.raises(ImageError, match="notes.jpg: cannot identify image file"):
        load_pixels(str(path), S)
    with pytest.raises(ImageError, match="cannot read file"):
        load_pixels(str(tmp_path / "missing.jpg"), S)


def test_resize_range_and_shape():
    out = resize_image_numpy(_photo(), S)
    assert out.shape == (S, S, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    one = resize_image_numpy(np.full((1, 1, 3), 9, np.uint8), S)  # a 1 x 1 image is upsampled like any other
    np.testing.assert_allclose(one, 9.0, rtol=1e-6)


@pytest.mark.parametrize("height,width,size", [(375, 500, 224), (60, 90, 96), (1, 1, 96), (224, 224, 224),
                                               (100, 300, 224), (1500, 1100, 224), (97, 95, 96), (13, 700, 64)])
def test_numpy_resize_is_tensorflows_bit_for_bit(height, width, size):
    pytest.importorskip("tensorflow")
    from sat_tf.images.resize import resize_image

    image = np.random.RandomState(height + width).randint(0, 256, (height, width, 3)).astype(np.uint8)
    np.testing.assert_array_equal(resize_image_numpy(image, size), resize_image(image, size).numpy())
