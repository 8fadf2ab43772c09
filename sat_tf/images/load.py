"""Reading photos the way every sat_tf entry point does: decode with Pillow, then the one resize policy.

`load_image` turns a file (or bytes) into an RGB uint8 array, and refuses what is not a usable photo with an
`ImageError` that names the file and the reason. The cases the wild throws at a captioner:

    input                               what happens
    JPEG / PNG / GIF / WebP / BMP / TIFF decoded (an animated GIF or WebP: its first frame)
    EXIF orientation 2-8                the pixels are turned upright first (what a phone's gallery shows)
    grayscale, palette, CMYK, YCbCr     converted to RGB
    16-bit or 32-bit grayscale          scaled to 8 bits by its actual range
    alpha channel (RGBA, LA, P + tRNS)  composited over white (transparent pixels are not black)
    zero-byte, truncated, corrupt       ImageError("...: truncated" / "cannot identify image file" ...)
    not an image (text, HTML, ...)      ImageError("... cannot identify image file")
    larger than max_pixels              ImageError("... too large") before decoding (a decompression bomb guard)
    smaller than 1x1 in any side        impossible in the formats; a 1x1 image is upsampled like any other

Then the one resize policy (`sat_tf.images.resize`: "squash" to S x S): `load_and_resize` gives what extraction
feeds the encoder, uint8 through TensorFlow's resize; `load_pixels` gives what an exported TFLite model takes, float32
through the same resize in numpy, for devices without TensorFlow (the LiteRT runtime, `sat_tf.lite`).

Decoding with Pillow and `load_pixels` need numpy and Pillow only: TensorFlow is imported by `load_and_resize` when it
first resizes, not with this module.

Shapes: H, W image height and width; S the encoder's square input side.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

from sat_tf.images.resize import resize_image_numpy, resize_image_uint8

# 10000 x 10000 photos must be accepted (robustness table); beyond ~2.5x that is a bomb, not a photo.
DEFAULT_MAX_PIXELS = 250_000_000

# Pillow runs its own bomb check inside `Image.open` (a DecompressionBombWarning above MAX_IMAGE_PIXELS, an error
# above twice that), before `max_pixels` can be checked; its default of 89.5 M pixels refused a 10000 x 10000 photo
# with an uncaught warning. Our guard is `max_pixels`, so Pillow's limit is raised to ours (never lowered, and
# never re-enabled where an application switched it off with None).
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < DEFAULT_MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


class ImageError(ValueError):
    """A file that cannot be used as an image. `path` names it; `reason` says why (short, for manifests)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def load_image(source: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_size: int | None = None, name: str | None = None) -> np.ndarray:
    """Decodes an image file or its bytes to RGB uint8 (H, W, 3); see the module docstring for every case.

    Args:
        source: a path, or the encoded bytes.
        max_pixels: int. Images with more pixels are refused before decoding.
        draft_size: int or None. For JPEG, let the decoder downscale by a power of two while keeping both sides
            >= draft_size (much faster for big photos that will be resized to S anyway); None decodes full size.
        name: str or None. How errors name the source (default: the path, or "<bytes>").
    """
    label = name or (os.fspath(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>")
    try:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            with open(source, "rb") as f:
                data = f.read()
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte
        raise ImageError(label, f"cannot read file ({getattr(e, 'strerror', None) or e})") from e
    if not data:
        raise ImageError(label, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(label, f"too large: {width}x{height} pixels is more than max_pixels={max_pixels}")
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.seek(0)  # animated GIF / WebP: the first frame
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no second full-size copy of a big photo
            return _to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(label, f"too large: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(label, "cannot identify image file: not an image, or a format Pillow cannot read") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        message = str(e)
        if "truncated" in message.lower() or isinstance(e, EOFError):
            raise ImageError(label, f"truncated image ({message or 'unexpected end of data'})") from e
        raise ImageError(label, f"corrupt image ({type(e).__name__}: {message})") from e


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> RGB uint8 (H, W, 3)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        x = np.asarray(image, dtype=np.float64)  # (H, W)
        low, high = float(x.min()), float(x.max())
        x = np.zeros_like(x) if high <= low else (x - low) * (255.0 / (high - low))
        gray = np.round(x).astype(np.uint8)  # (H, W)
        return np.repeat(gray[:, :, None], 3, axis=2)  # (H, W, 3)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX
    return np.asarray(image, dtype=np.uint8)  # (H, W, 3)


def load_and_resize(source: str | os.PathLike | bytes, size: int, **kwargs) -> np.ndarray:
    """`load_image` then `resize_image`, as uint8 (S, S, 3) (what extraction feeds the encoder)."""
    image = load_image(source, draft_size=size, **kwargs)  # (H, W, 3)
    if image.shape[:2] == (size, size):
        # `resize_image` is the identity at scale 1 (tested bit for bit), and its kernel costs ~2 ms per image.
        return image
    return resize_image_uint8(image, size)  # (S, S, 3)


def load_pixels(source: str | os.PathLike | bytes, size: int, **kwargs) -> np.ndarray:
    """What an exported TFLite model takes for one image, without TensorFlow: `load_image` (EXIF orientation,
    colour modes and alpha as everywhere) then `resize_image_numpy`, float32 (S, S, 3) in 0..255 (the exported
    SavedModel's in-graph decoder gives the same pixels; `load_and_resize` gives them rounded to uint8).

    Args:
        source: a path, or the encoded bytes.
        size: int. S.
        **kwargs: `load_image`'s max_pixels and name.
    """
    image = load_image(source, draft_size=size, **kwargs)  # (H, W, 3)
    return resize_image_numpy(image, size)  # (S, S, 3)


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey picture
