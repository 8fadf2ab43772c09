"""The image files the wild throws at a captioner, each written by one small function, with what `load_image` must
make of it: either an `ImageError` whose reason contains `error`, or an RGB array that `check` accepts.

Shared by the extraction and the caption tests in `test_images.py`, so both entry points see the very same files.
Every file is a few KB except the two 10000 x 10000 images (one colour, so they compress to ~0.3 MB / 1.5 MB).

Shapes: H, W image height and width.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from typing import Callable

import numpy as np
from PIL import Image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
HUGE = 10_000  # sides of the big photos
EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class ImageCase:
    """One kind of input file.

    Args:
        name: str. Test id.
        file_name: str. Name of the file written (its extension is what a user would see).
        write: writes the file to the path it is given.
        error: str or None. A substring of `ImageError.reason` where the file must be refused; None where it decodes.
        check: called with `load_image`'s (H, W, 3) uint8 output where the file decodes; asserts what it must be.
        huge: bool. A 10000 x 10000 photo: checked on its resized (S, S, 3) pixels (one colour, so the same check
            holds) with its decode time and memory measured, instead of decoding it once more at full size.
    """

    name: str
    file_name: str
    write: Callable[[str], None]
    error: str | None = None
    check: Callable[[np.ndarray], None] | None = None
    huge: bool = False


def _close(actual, expected, tolerance: float, what: str) -> None:
    actual = np.asarray(actual, np.float64)
    assert np.all(np.abs(actual - np.asarray(expected, np.float64)) <= tolerance), \
        f"{what}: got {np.round(actual, 1).tolist()}, expected {expected} (+-{tolerance})"


def _pixels(fill, size=(16, 16)) -> np.ndarray:
    return np.broadcast_to(np.asarray(fill, np.uint8), (*size, len(fill))).copy()


# Decodable ----------------------------------------------------------------------------------------------------------


def upright_pattern() -> np.ndarray:
    """(48, 32, 3): red top half, blue bottom half, green strip on the left: every flip or turn of it differs."""
    image = np.zeros((48, 32, 3), np.uint8)
    image[:24] = RED
    image[24:] = BLUE
    image[:, :8] = GREEN
    return image


def check_upright(image: np.ndarray) -> None:
    assert image.shape == (48, 32, 3), f"EXIF orientation not applied: shape {image.shape}, upright is (48, 32, 3)"
    _close(image[2:20, 12:30].mean(axis=(0, 1)), RED, 12, "top right region (red when upright)")
    _close(image[28:46, 12:30].mean(axis=(0, 1)), BLUE, 12, "bottom right region (blue when upright)")
    _close(image[2:46, 1:6].mean(axis=(0, 1)), GREEN, 24, "left strip (green when upright)")


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for `upright` under EXIF orientation 1-8, written from the EXIF 2.3 definitions
    (row 0 / column 0 of the stored image are which visual side), independent of Pillow's own table."""
    return {
        1: lambda u: u,
        2: lambda u: u[:, ::-1],  # row 0 = top, column 0 = right
        3: lambda u: u[::-1, ::-1],  # row 0 = bottom, column 0 = right
        4: lambda u: u[::-1],  # row 0 = bottom, column 0 = left
        5: lambda u: u.transpose(1, 0, 2),  # row 0 = left, column 0 = top
        6: lambda u: np.rot90(u, 1),  # row 0 = right, column 0 = top
        7: lambda u: u[::-1, ::-1].transpose(1, 0, 2),  # row 0 = right, column 0 = bottom
        8: lambda u: np.rot90(u, -1),  # row 0 = left, column 0 = bottom
    }[orientation](upright)


def write_exif_rotated(path: str, orientation: int = 6) -> None:
    image = Image.fromarray(np.ascontiguousarray(stored_for_orientation(upright_pattern(), orientation)))
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    image.save(path, "JPEG", quality=95, exif=exif)


def _write_alpha_png(path: str) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)  # left half: fully transparent *black* (a naive convert shows black)
    rgba[:, 8:] = (*RED, 255)
    rgba[:8, 8:, 3] = 128  # top right: half-transparent red over white -> (255, 127, 127)
    Image.fromarray(rgba, "RGBA").save(path, "PNG")


def _check_alpha(image: np.ndarray) -> None:
    _close(image[:, :8].reshape(-1, 3).mean(0), WHITE, 0, "fully transparent pixels (white)")
    _close(image[8:, 8:].reshape(-1, 3).mean(0), RED, 0, "opaque red pixels")
    _close(image[:8, 8:].reshape(-1, 3).mean(0), (255, 127, 127), 1.5, "half-transparent red over white")


def _write_palette_png(path: str) -> None:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, *GREEN, *BLUE] + [0] * (3 * 253))
    image.paste(2, (8, 0, 16, 16))
    image.info["transparency"] = 0
    image.paste(0, (0, 0, 4, 16))  # a transparent palette entry (tRNS): white, not black
    image.save(path, "PNG", transparency=0)


def _check_palette(image: np.ndarray) -> None:
    _close(image[:, :4].reshape(-1, 3).mean(0), WHITE, 0, "transparent palette index")
    _close(image[:, 4:8].reshape(-1, 3).mean(0), GREEN, 0, "palette index 1")
    _close(image[:, 8:].reshape(-1, 3).mean(0), BLUE, 0, "palette index 2")


def _write_grayscale_png(path: str) -> None:
    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)), "L").save(path, "PNG")


def _check_grayscale(image: np.ndarray) -> None:
    assert image.shape == (16, 16, 3)
    np.testing.assert_array_equal(image[..., 0], np.tile(np.arange(0, 256, 16), (16, 1)), "gray values kept")
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all(), "gray -> R = G = B"


def _write_cmyk_jpeg(path: str) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=95)  # no cyan, full magenta+yellow


def _write_16bit_png(path: str) -> None:
    values = np.linspace(1000, 3000, 16 * 16).reshape(16, 16).astype(np.uint16)  # a dim 16-bit scan
    Image.fromarray(values).save(path, "PNG")
    assert Image.open(path).mode.startswith("I;16"), "the fixture must be a 16-bit PNG"


def _check_16bit(image: np.ndarray) -> None:
    assert image.min() == 0 and image.max() == 255, f"16-bit range not stretched: {image.min()}..{image.max()}"
    flat = image[..., 0].reshape(-1).astype(int)
    assert (np.diff(flat) >= 0).all(), "16-bit gradient order lost"


def _frames(*colours):
    return [Image.new("RGB", (16, 16), c) for c in colours]


def _write_animated_gif(path: str) -> None:
    first, *rest = _frames(RED, BLUE, GREEN)
    first.save(path, "GIF", save_all=True, append_images=rest, duration=100, loop=0)


def _write_animated_webp(path: str) -> None:
    first, *rest = _frames(RED, BLUE)
    first.save(path, "WEBP", save_all=True, append_images=rest, duration=100, lossless=True)


def _write_webp(path: str) -> None:
    pixels = _pixels(GREEN)
    pixels[:, 8:] = BLUE
    Image.fromarray(pixels).save(path, "WEBP", lossless=True)


def _check_webp(image: np.ndarray) -> None:
    _close(image[:, :8].reshape(-1, 3).mean(0), GREEN, 0, "left half")
    _close(image[:, 8:].reshape(-1, 3).mean(0), BLUE, 0, "right half")


HUGE_COLOUR = (200, 30, 30)


def write_huge_png(path: str) -> None:
    """A 10000 x 10000 RGB PNG of one colour, written row by row through zlib (0.3 MB, ~1 s, 0.1 GB peak)."""
    row = b"\x00" + bytes(HUGE_COLOUR) * HUGE  # filter type 0, then the pixels
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(HUGE)) + deflate.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", HUGE, HUGE, 8, 2, 0, 0, 0)  # 8-bit RGB
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def write_huge_jpeg(path: str) -> None:
    """A 10000 x 10000 JPEG of one colour (grayscale-free RGB, ~1.5 MB)."""
    Image.new("RGB", (HUGE, HUGE), HUGE_COLOUR).save(path, "JPEG", quality=50)


def _check_huge(image: np.ndarray) -> None:
    h, w, _ = image.shape
    assert h * w >= 1, "empty"
    _close(image.reshape(-1, 3).mean(0), HUGE_COLOUR, 3, "the big photo's colour")


def _write_one_pixel(path: str) -> None:
    Image.new("RGB", (1, 1), (10, 200, 30)).save(path, "PNG")


def _check_one_pixel(image: np.ndarray) -> None:
    assert image.shape == (1, 1, 3) and tuple(image[0, 0]) == (10, 200, 30)


def _rgb_jpeg_bytes(size=(64, 64)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _rgb_png_bytes(size=(64, 64)) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


# Refused ------------------------------------------------------------------------------------------------------------


def _write_bytes(data: bytes) -> Callable[[str], None]:
    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(data)
    return write


def _corrupt_png() -> bytes:
    data = bytearray(_rgb_png_bytes())
    data[data.index(b"IDAT") + 40] ^= 0xFF  # a flipped byte inside the compressed pixels
    return bytes(data)


def bomb_png_header(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header claims width x height pixels (400 M here, above max_pixels) and whose data is tiny: a
    decompression bomb must be refused from the header, before any pixel is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) \
        + chunk(b"IEND", b"")


def _write_missing(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def _write_directory(path: str) -> None:
    os.makedirs(path, exist_ok=True)


CASES: list[ImageCase] = [
    # refused, with the reason
    ImageCase("corrupt", "corrupt.png", _write_bytes(_corrupt_png()), error="corrupt image"),
    ImageCase("truncated_jpeg", "truncated.jpg", _write_bytes(_rgb_jpeg_bytes()[:1500]), error="truncated image"),
    ImageCase("truncated_png", "truncated.png", _write_bytes(_rgb_png_bytes()[:3000]), error="truncated image"),
    ImageCase("zero_bytes", "empty.jpg", _write_bytes(b""), error="empty file (0 bytes)"),
    ImageCase("not_an_image", "page.jpg", _write_bytes(b"<html><body>404 not found</body></html>\n"),
              error="cannot identify image file"),
    ImageCase("decompression_bomb", "bomb.png", _write_bytes(bomb_png_header()), error="too large"),
    ImageCase("missing_file", "gone.jpg", _write_missing, error="cannot read file"),
    ImageCase("directory", "folder.jpg", _write_directory, error="cannot read file"),
    # decoded
    ImageCase("png_alpha", "alpha.png", _write_alpha_png, check=_check_alpha),
    ImageCase("palette", "palette.png", _write_palette_png, check=_check_palette),
    ImageCase("grayscale", "gray.png", _write_grayscale_png, check=_check_grayscale),
    ImageCase("cmyk_jpeg", "cmyk.jpg", _write_cmyk_jpeg,
              check=lambda im: _close(im.reshape(-1, 3).mean(0), RED, 8, "CMYK (0, 255, 255, 0) is red")),
    ImageCase("png_16bit", "sixteen.png", _write_16bit_png, check=_check_16bit),
    ImageCase("exif_rotated", "rotated.jpg", write_exif_rotated, check=check_upright),
    ImageCase("animated_gif", "animated.gif", _write_animated_gif,
              check=lambda im: _close(im.reshape(-1, 3).mean(0), RED, 0, "the first frame (red)")),
    ImageCase("webp", "still.webp", _write_webp, check=_check_webp),
    ImageCase("animated_webp", "animated.webp", _write_animated_webp,
              check=lambda im: _close(im.reshape(-1, 3).mean(0), RED, 0, "the first frame (red)")),
    ImageCase("huge_png", "huge.png", write_huge_png, check=_check_huge, huge=True),
    ImageCase("huge_jpeg", "huge.jpg", write_huge_jpeg, check=_check_huge, huge=True),
    ImageCase("one_pixel", "one.png", _write_one_pixel, check=_check_one_pixel),
]
BY_NAME = {case.name: case for case in CASES}


def write_cases(directory: str) -> dict[str, str]:
    """Writes every case into `directory`; returns {case name: path}."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for case in CASES:
        path = os.path.join(directory, case.file_name)
        case.write(path)
        paths[case.name] = path
    return paths
