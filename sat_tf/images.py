"""Reading photos the way every sat_tf entry point does: decode with Pillow, then one resize policy.

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

`resize_image` is the resize policy ("squash"): the whole image bilinearly resized (anti-aliased) to S x S without
keeping the aspect ratio, as in `EncoderSpec.resize`. It is a TensorFlow op, so extraction, `caption` and the
exported SavedModel (which decodes in-graph) resize identically. `resize_image_numpy` is the same resize in numpy
(TensorFlow's ScaleAndTranslate with the triangle kernel, computed the same way), for devices without TensorFlow:
the LiteRT runtime (`sat_tf.lite`) feeds its TFLite models with `load_pixels`.

TensorFlow is imported by `resize_image` when it is first called, not with this module: decoding with Pillow and
`load_pixels` need numpy and Pillow only.

Shapes: H, W image height and width; S the encoder's square input side.
"""

from __future__ import annotations

import functools
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

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


def resize_image(images, size: int) -> tf.Tensor:
    """The "squash" policy: (H, W, 3) or (B, H, W, 3), any dtype in 0..255 -> float32 (..., S, S, 3) in 0..255."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.cast(images, tf.float32)
    # uint8 goes in as it is: the resize kernel reads each pixel as float (bit-identical to casting first) and
    # returns float32, without a float32 copy of the whole image (1.2 GB for a 10000 x 10000 photo).
    resized = tf.image.resize(images, (size, size), method="bilinear", antialias=True)  # (..., S, S, 3)
    return tf.clip_by_value(tf.cast(resized, tf.float32), 0.0, 255.0)


def load_and_resize(source: str | os.PathLike | bytes, size: int, **kwargs) -> np.ndarray:
    """`load_image` then `resize_image`, as uint8 (S, S, 3) (what extraction feeds the encoder)."""
    image = load_image(source, draft_size=size, **kwargs)  # (H, W, 3)
    if image.shape[:2] == (size, size):
        # `resize_image` is the identity at scale 1 (tested bit for bit), and its kernel costs ~2 ms per image.
        return image
    return _uint8_resizer(int(size))(image).numpy()  # (S, S, 3)


@functools.lru_cache(maxsize=None)
def _uint8_resizer(size: int):
    """`resize_image` rounded to uint8 as one traced graph for any (H, W, 3) (eager dispatch of its ops costs
    as much as the kernel on a 500 x 375 photo); rounds half to even like numpy."""
    import tensorflow as tf

    return tf.function(lambda image: tf.cast(tf.round(resize_image(image, size)), tf.uint8),  # (S, S, 3)
                       input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])


def resize_image_numpy(image: np.ndarray, size: int) -> np.ndarray:
    """`resize_image` in numpy: uint8 (H, W, 3) in 0..255 -> float32 (S, S, 3) in 0..255.

    TensorFlow's antialiased bilinear resize is ScaleAndTranslate with the triangle kernel: every output row is a
    weighted sum of a span of input rows (the kernel widened by the downscale factor), then every output column of
    a span of columns. The spans and weights are computed here with the kernel's float32 arithmetic, and the sums
    run in the kernel's order, so the result is TensorFlow's bit for bit (tests/lite/test_pixels.py).

    Args:
        image: uint8 (H, W, 3) (any real dtype in 0..255 works).
        size: int. S.
    """
    height, width = image.shape[:2]
    rows = _resize_spans(height, size)  # starts (S,), weights (S, span)
    columns = _resize_spans(width, size)
    out = _gather_spans(image, *rows, axis=0)  # (S, W, 3)
    out = _gather_spans(out, *columns, axis=1)  # (S, S, 3)
    return np.clip(out, 0.0, 255.0)


def _resize_spans(input_size: int, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts int (O,), weights float32 (O, span)) of the triangle kernel, antialiased, as TensorFlow's
    ComputeSpansCore computes them (float32 throughout; the weights of each output sum to 1)."""
    f32 = np.float32
    scale = f32(output_size) / f32(input_size)
    inv_scale = f32(1.0 / float(scale))
    kernel_scale = max(inv_scale, f32(1.0))  # widen the kernel when downscaling: a low-pass filter
    span = min(2 * int(np.ceil(kernel_scale)) + 1, input_size)
    sample = (np.arange(output_size, dtype=f32) + f32(0.5)) * inv_scale  # (O,) centres in input coordinates
    starts = np.clip(np.ceil(sample - kernel_scale - f32(0.5)), 0, input_size - 1).astype(np.int64)  # (O,)
    ends = np.clip(np.floor(sample + kernel_scale - f32(0.5)), 0, input_size - 1).astype(np.int64) + 1  # (O,)
    sources = starts[:, None] + np.arange(span)[None, :]  # (O, span)
    position = (sources.astype(f32) + f32(0.5) - sample[:, None]) * (f32(1.0) / kernel_scale)
    weights = np.where(sources < ends[:, None], np.maximum(f32(1.0) - np.abs(position), f32(0.0)), f32(0.0))
    total = np.zeros(output_size, f32)
    for j in range(span):  # summed in order, as the kernel does
        total += weights[:, j]
    weights = (weights * (f32(1.0) / total)[:, None]).astype(f32)  # (O, span)
    return starts, weights


def _gather_spans(image: np.ndarray, starts: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """float32 weighted sums along `axis` (0: rows, 1: columns) of (H, W, C): output i is
    sum_j weights[i, j] * image[starts[i] + j], accumulated in j order; taps past the edge are skipped."""
    size = image.shape[axis]
    shape = [1, 1, 1]
    shape[axis] = len(starts)
    out = None
    for j in range(weights.shape[1]):
        index = starts + j  # (O,)
        inside = index < size
        taps = np.take(image, np.minimum(index, size - 1), axis=axis).astype(np.float32)  # (O, W, C) or (H, O, C)
        term = np.where(inside, weights[:, j], np.float32(0.0)).reshape(shape) * taps
        out = term if out is None else out + term
    return out


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
