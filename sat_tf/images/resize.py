"""The one resize policy of sat_tf ("squash"): the whole image bilinearly resized (anti-aliased) to S x S without
keeping the aspect ratio, as in `EncoderSpec.resize`.

`resize_image` is a TensorFlow op, so extraction, `caption` and the exported SavedModel (which decodes in-graph,
`sat_tf.images.tf_decode`) resize identically. `resize_image_numpy` is the same resize in numpy (TensorFlow's
ScaleAndTranslate with the triangle kernel, computed the same way), for devices without TensorFlow: the LiteRT
runtime (`sat_tf.lite`) feeds its TFLite models with `sat_tf.images.load.load_pixels`.

TensorFlow is imported by `resize_image` when it is first called, not with this module.

Shapes: H, W image height and width; S the encoder's square input side.
"""

from __future__ import annotations

import functools

import numpy as np


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


def resize_image_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """`resize_image` rounded to uint8: uint8 (H, W, 3) -> uint8 (S, S, 3), what extraction feeds the encoder."""
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
