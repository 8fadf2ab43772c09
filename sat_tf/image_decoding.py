"""Image bytes -> encoder input, in TensorFlow ops: the in-graph twin of `sat_tf.images` for exported models.

A served model receives encoded image bytes and must turn them into the very pixels the training features were
extracted from, without Python. `decode_image` does what `sat_tf.images.load_and_resize` does with Pillow, with
`tf.io` ops only, so it runs eagerly, in `Dataset.map` and inside a SavedModel (TF Serving runs it):

    input                               what happens (same as the Pillow path unless marked *)
    JPEG                                decoded with libjpeg's accurate integer DCT and, like Pillow's `draft`, scaled
                                        down by 1/2, 1/4 or 1/8 in the DCT while both sides stay >= S; the pixels
                                        are bit-identical to Pillow's
    JPEG EXIF orientation 2-8           the pixels are turned upright first (parsed from the APP1 segment in-graph)
    PNG / GIF (first frame) / BMP /     decoded; grayscale is repeated to RGB, 16-bit grayscale PNG is scaled to 8
    static WebP                         bits by its actual range
    alpha (RGBA / LA / palette + tRNS)  composited over white
    animated WebP                    *  refused: TensorFlow's WebP decoder corrupts memory on it (seen crashing the
                                        process with TF 2.21); send a still image
    TIFF, HEIF/AVIF, JPEG XL, other  *  refused with the format named (Pillow reads TIFF; convert it client-side)
    zero bytes, not an image            InvalidArgumentError "image_bytes[i]: empty (0 bytes)" / "...: not a JPEG,
                                        PNG, GIF, BMP or WebP image (first bytes: [...])"
    truncated / corrupt                 InvalidArgumentError from the decoder ("Invalid JPEG data", "Invalid PNG
                                        data", ...)
    more than max_pixels                InvalidArgumentError "...: too large: W x H pixels" before decoding

Every refusal is an `InvalidArgumentError` raised by a `tf.debugging.Assert` (or the decode op) before any large
allocation, so a server answers the request with INVALID_ARGUMENT and keeps running. Differences from Pillow that
remain: GIF transparency is not composited, and the PNG eXIf chunk is ignored (only JPEG orientation is read).

Then `sat_tf.images.resize_image` (the "squash" resize policy) brings the image to S x S, float32 in 0..255.

Shapes: B batch, H, W decoded height and width, C decoded channels (1-4), S the encoder's square input side.
"""

from __future__ import annotations

import tensorflow as tf

from sat_tf.images import DEFAULT_MAX_PIXELS, resize_image

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
_HEADER_BYTES = 131072  # JPEG APP segments (EXIF included) sit at the start; APP1 is at most 64 KB
_PAD = 64  # zero bytes after the header so that fixed-offset reads past a short file stay in range
_MAX_SEGMENTS = 32  # JPEG marker segments walked looking for EXIF before giving up
_MAX_IFD_ENTRIES = 64  # IFD0 entries scanned for the orientation tag (a camera writes ~10-20)
_ORIENTATION_TAG = 0x0112


def _header(data: tf.Tensor) -> tf.Tensor:
    """The first bytes of a string scalar as int64 (N + _PAD,), zero-padded. (Bytes past the file end read 0.)"""
    raw = tf.io.decode_raw(tf.strings.substr(data, 0, _HEADER_BYTES), tf.uint8)  # (<= N,)
    raw = tf.pad(raw, [[0, _HEADER_BYTES + _PAD - tf.size(raw)]])
    return tf.cast(raw, tf.int64)


def _byte(raw: tf.Tensor, position) -> tf.Tensor:
    """raw[position] with out-of-range positions reading 0 (positions may come from untrusted offsets)."""
    position = tf.convert_to_tensor(position, tf.int64)
    inside = (position >= 0) & (position < _HEADER_BYTES)
    return tf.where(inside, tf.gather(raw, tf.clip_by_value(position, 0, _HEADER_BYTES - 1)), tf.zeros_like(position))


def _matches(raw: tf.Tensor, offset: int, signature: bytes) -> tf.Tensor:
    return tf.reduce_all(tf.equal(raw[offset:offset + len(signature)], tf.constant(list(signature), tf.int64)))


def _uint(raw: tf.Tensor, position, size: int, little_endian) -> tf.Tensor:
    """An unsigned `size`-byte integer at `position` (int64; scalar or vector positions)."""
    position = tf.convert_to_tensor(position, tf.int64)
    parts = [_byte(raw, position + i) for i in range(size)]
    big = tf.zeros_like(position)
    little = tf.zeros_like(position)
    for i in range(size):
        big = big * 256 + parts[i]
        little = little * 256 + parts[size - 1 - i]
    return tf.where(little_endian, little, big)


def _exif_orientation(raw: tf.Tensor) -> tf.Tensor:
    """EXIF orientation (int32 1..8; 1 when absent or invalid) of a JPEG from its header bytes.

    Walks the marker segments after SOI to the first APP1 "Exif\\0\\0" segment, then reads tag 0x0112 (a SHORT) of
    IFD0 of the TIFF structure inside it, in its byte order, as Pillow's `getexif()` does.
    """
    def cond(i, position, tiff):
        return (i < _MAX_SEGMENTS) & (tiff < 0) & (position + 10 < _HEADER_BYTES)

    def body(i, position, tiff):
        marker = _byte(raw, position + 1)
        length = _uint(raw, position + 2, 2, False)
        # FF E1 <length> "Exif\0\0": the EXIF APP1 segment.
        exif = ((marker == 0xE1) & (_byte(raw, position) == 0xFF)
                & tf.reduce_all(tf.equal(tf.stack([_byte(raw, position + 4 + k) for k in range(6)]),
                                         tf.constant(list(b"Exif\0\0"), tf.int64))))
        tiff = tf.where(exif, position + 10, tiff)
        # Not a marker, start of scan or end of image: the header segments are over.
        stop = (_byte(raw, position) != 0xFF) | (marker == 0xDA) | (marker == 0xD9)
        return i + 1, tf.where(stop, tf.constant(_HEADER_BYTES, tf.int64), position + 2 + length), tiff

    _, _, tiff = tf.while_loop(cond, body, (tf.constant(0), tf.constant(2, tf.int64), tf.constant(-1, tf.int64)))
    little = (_byte(raw, tiff) == 0x49) & (_byte(raw, tiff + 1) == 0x49)  # "II" Intel order, else "MM" Motorola
    ifd = tiff + _uint(raw, tiff + 4, 4, little)
    count = tf.minimum(_uint(raw, ifd, 2, little), _MAX_IFD_ENTRIES)
    entries = ifd + 2 + 12 * tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64)  # (entries,)
    match = ((tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count)
             & (_uint(raw, entries, 2, little) == _ORIENTATION_TAG)
             & (_uint(raw, entries + 2, 2, little) == 3))  # type SHORT
    value = tf.reduce_max(tf.where(match, _uint(raw, entries + 8, 2, little), tf.zeros_like(entries)))
    valid = (tiff >= 0) & (value >= 1) & (value <= 8)
    return tf.cast(tf.where(valid, value, tf.ones_like(value)), tf.int32)


def _orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Applies an EXIF orientation to (H, W, C) the way `PIL.ImageOps.exif_transpose` does."""
    branches = [
        lambda: image,  # 1 upright
        lambda: tf.reverse(image, [1]),  # 2 mirrored left-right
        lambda: tf.reverse(image, [0, 1]),  # 3 rotated 180
        lambda: tf.reverse(image, [0]),  # 4 mirrored top-bottom
        lambda: tf.transpose(image, [1, 0, 2]),  # 5 transpose
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [1]),  # 6 rotate 90 clockwise to fix
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0, 1]),  # 7 transverse
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0]),  # 8 rotate 90 counter-clockwise to fix
    ]
    return tf.switch_case(orientation - 1, branches)


def _dimensions(data: tf.Tensor, raw: tf.Tensor, kind: dict[str, tf.Tensor]) -> tf.Tensor:
    """(width, height) int64 from the header of a PNG, GIF, BMP or WebP, or via libjpeg's header parser."""
    png = tf.stack([_uint(raw, 16, 4, False), _uint(raw, 20, 4, False)])
    gif = tf.stack([_uint(raw, 6, 2, True), _uint(raw, 8, 2, True)])
    bmp_height = _uint(raw, 22, 4, True)
    bmp_height = tf.where(bmp_height >= 2 ** 31, 2 ** 32 - bmp_height, bmp_height)  # top-down BMPs are negative
    bmp = tf.stack([_uint(raw, 18, 4, True), bmp_height])
    vp8x = tf.stack([_uint(raw, 24, 3, True) + 1, _uint(raw, 27, 3, True) + 1])
    vp8 = tf.stack([_uint(raw, 26, 2, True) % 16384, _uint(raw, 28, 2, True) % 16384])
    bits = _uint(raw, 21, 4, True)
    vp8l = tf.stack([bits % 16384 + 1, (bits // 16384) % 16384 + 1])
    chunk = raw[12:16]
    webp = tf.where(tf.reduce_all(chunk == tf.constant(list(b"VP8X"), tf.int64)), vp8x,
                    tf.where(tf.reduce_all(chunk == tf.constant(list(b"VP8L"), tf.int64)), vp8l, vp8))
    other = tf.where(kind["PNG"], png, tf.where(kind["GIF"], gif, tf.where(kind["BMP"], bmp, webp)))
    return tf.cond(kind["JPEG"], lambda: tf.cast(tf.image.extract_jpeg_shape(data)[1::-1], tf.int64),
                   lambda: other)


def _decode_jpeg(data: tf.Tensor, width: tf.Tensor, height: tf.Tensor, size: int | None) -> tf.Tensor:
    """RGB uint8 (H', W', 3), downscaled in the DCT exactly as Pillow's `draft("RGB", (size, size))`."""
    if size is None:
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
    scale = tf.minimum(width // size, height // size)
    branch = tf.cast(tf.where(scale >= 8, 3, tf.where(scale >= 4, 2, tf.where(scale >= 2, 1, 0))), tf.int32)
    return tf.switch_case(branch, [
        lambda ratio=ratio: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE", ratio=ratio)
        for ratio in (1, 2, 4, 8)])


def _decode_other(data: tf.Tensor, gray16: tf.Tensor) -> tf.Tensor:
    """PNG / GIF / BMP / WebP -> uint8 (H, W, C), C in 1..4; 16-bit grayscale scaled by its range like Pillow."""
    def scaled_gray16():
        x = tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16), tf.float32)  # (H, W, 1)
        low, high = tf.reduce_min(x), tf.reduce_max(x)
        x = tf.where(high > low, (x - low) * (255.0 / tf.maximum(high - low, 1.0)), tf.zeros_like(x))
        return tf.cast(tf.round(x), tf.uint8)

    def eight_bit():
        return tf.io.decode_image(data, channels=0, expand_animations=False)

    image = tf.cond(gray16, scaled_gray16, eight_bit)
    image.set_shape([None, None, None])
    return image


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    """uint8 (H, W, C) with C in 1..4 -> RGB uint8 (H, W, 3); alpha (C = 2 or 4) composited over white.

    Only images with alpha go through float32 (a full-size float copy of a big photo is 4x its bytes).
    """
    def composite(color, alpha):
        color, alpha = tf.cast(color, tf.float32), tf.cast(alpha, tf.float32)  # (H, W, 3), (H, W, 1)
        # Pillow's alpha_composite over opaque white: (src * a + 255 * (255 - a)) / 255, rounded half up.
        out = tf.floor((color * alpha + 255.0 * (255.0 - alpha)) / 255.0 + 0.5)
        return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)

    gray = lambda: tf.tile(image[:, :, :1], [1, 1, 3])  # noqa: E731
    return tf.switch_case(tf.shape(image)[-1] - 1, [
        gray,  # L
        lambda: composite(gray(), image[:, :, 1:2]),  # LA
        lambda: image[:, :, :3],  # RGB
        lambda: composite(image[:, :, :3], image[:, :, 3:4]),  # RGBA
    ])


def decode_image(data, size: int | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS, name=None) -> tf.Tensor:
    """Decodes one encoded image (and resizes it) as `sat_tf.images.load_and_resize` does, in TensorFlow ops.

    Args:
        data: string scalar, the encoded bytes of a JPEG, PNG, GIF, BMP or (still) WebP.
        size: int or None. S: resize to S x S with `resize_image`; None returns the decoded image as it is.
        max_pixels: int. Larger images (by their header) are refused before decoding.
        name: string scalar or None. How error messages name the input (default "image_bytes").

    Returns:
        float32 (S, S, 3) in 0..255 when `size` is given, else RGB uint8 (H, W, 3).

    Raises:
        tf.errors.InvalidArgumentError: for bytes that are not a usable image; the message names the input and
            the reason (see the module docstring).
    """
    data = tf.convert_to_tensor(data, tf.string)
    label = tf.constant("image_bytes") if name is None else tf.convert_to_tensor(name, tf.string)
    raw = _header(data)  # (N + pad,)
    kind = {
        "JPEG": _matches(raw, 0, b"\xff\xd8\xff"),
        "PNG": _matches(raw, 0, b"\x89PNG\r\n\x1a\n"),
        "GIF": _matches(raw, 0, b"GIF87a") | _matches(raw, 0, b"GIF89a"),
        "BMP": _matches(raw, 0, b"BM"),
        "WebP": _matches(raw, 0, b"RIFF") & _matches(raw, 8, b"WEBP"),
    }
    known = tf.reduce_any(tf.stack(list(kind.values())))
    unsupported = [  # recognised formats the in-graph decoders cannot (or must not) read
        (_matches(raw, 0, b"II*\x00") | _matches(raw, 0, b"MM\x00*"), "TIFF is not supported by the in-graph "
                                                                        "decoder; send JPEG or PNG"),
        (_matches(raw, 4, b"ftyp"), "HEIF/AVIF/MP4 is not supported; send JPEG or PNG"),
        (_matches(raw, 0, b"\xff\x0a") | _matches(raw, 4, b"JXL "), "JPEG XL is not supported; send JPEG or PNG"),
        # VP8X flag bit 1: animation. TensorFlow's WebP decoder corrupts the heap on animated WebP.
        (kind["WebP"] & _matches(raw, 12, b"VP8X") & tf.equal(tf.bitwise.bitwise_and(raw[20], 2), 2),
         "animated WebP is not supported; send a still image (JPEG, PNG or a still WebP)"),
    ]
    checks = [tf.debugging.Assert(tf.strings.length(data) > 0, [tf.strings.join([label, ": empty (0 bytes)"])])]
    for bad, reason in unsupported:
        checks.append(tf.debugging.Assert(tf.logical_not(bad), [tf.strings.join([label, ": ", reason])]))
    checks.append(tf.debugging.Assert(known, [tf.strings.join([
        label, ": not a JPEG, PNG, GIF, BMP or WebP image (first bytes: ",
        tf.strings.format("{}", raw[:8], summarize=8), ")"])]))
    with tf.control_dependencies(checks):
        width_height = _dimensions(data, raw, kind)  # (2,)
    pixels = width_height[0] * width_height[1]
    too_large = tf.debugging.Assert(pixels <= max_pixels, [tf.strings.join([
        label, ": too large: ", tf.strings.format("{} x {}", (width_height[0], width_height[1])),
        f" pixels is more than max_pixels={max_pixels}"])])
    with tf.control_dependencies([too_large]):
        data = tf.identity(data)
    gray16 = kind["PNG"] & tf.equal(raw[24], 16) & tf.equal(raw[25], 0)  # IHDR bit depth 16, colour type 0
    image = tf.cond(
        kind["JPEG"],
        lambda: _orient(_decode_jpeg(data, width_height[0], width_height[1], size), _exif_orientation(raw)),
        lambda: _decode_other(data, gray16))
    image = _to_rgb(image)  # (H, W, 3) uint8
    if size is None:
        return image
    return resize_image(image, size)  # (S, S, 3)


def decode_images(data, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image_bytes") -> tf.Tensor:
    """A batch of encoded images -> the encoder's input, as an exported model's first step.

    Args:
        data: string (B,), encoded images (see `decode_image`).
        size: int. S.
        max_pixels: int. Larger images are refused before decoding.
        name: str. Errors name the offending element as `name[i]`.

    Returns:
        float32 (B, S, S, 3) in 0..255.
    """
    data = tf.convert_to_tensor(data, tf.string)
    indices = tf.range(tf.shape(data)[0])

    def one(args):
        i, element = args
        label = tf.strings.join([name, "[", tf.strings.as_string(i), "]"])
        return decode_image(element, size, max_pixels=max_pixels, name=label)

    return tf.map_fn(one, (indices, data), fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
