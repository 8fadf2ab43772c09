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
    zero bytes, not an image            refused: "empty (0 bytes)" / "not an image (JPEG, PNG, GIF, BMP or WebP
                                        expected)" (`decode_image` adds the first bytes)
    truncated / corrupt                 refused by the decoder: "truncated JPEG" where the file lacks its format's
                                        ending (JPEG EOI, PNG IEND, GIF trailer, BMP / RIFF size), else "corrupt
                                        PNG", ...
    more than max_pixels                refused from the header, before decoding: "too large: W x H pixels ..."

Two ways to refuse. `decode_image` / `decode_images` (one image, or a whole batch that must be good) raise an
`InvalidArgumentError` from a `tf.debugging.Assert` (or the decode op) before any large allocation, naming the
element (`image_bytes[i]: empty (0 bytes)`; the decoder's own words, "Invalid JPEG data", for truncated or corrupt
bytes). `decode_rows` (what the SavedModel's image signatures run) never raises for the content of an image: it
decodes the good rows and returns an error string per row, "image i: <reason>", so a bad image in a batch fails only
its own row. Either way a server keeps running. Differences from Pillow that remain: GIF transparency is not
composited, and the PNG eXIf chunk is ignored (only JPEG orientation is read).

Then `sat_tf.images.resize_image` (the "squash" resize policy) brings the image to S x S, float32 in 0..255.

Shapes: B batch, G the rows of a batch that decoded, H, W decoded height and width, C decoded channels (1-4), S the
encoder's square input side.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import tensorflow as tf

from sat_tf.images.load import DEFAULT_MAX_PIXELS
from sat_tf.images.resize import resize_image

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
# Row codes of `decode_rows`: why a row of a batch was not decoded (0: it was).
DECODED, EMPTY, NOT_AN_IMAGE, TIFF, HEIF, JPEG_XL, ANIMATED_WEBP, TOO_LARGE, UNDECODABLE = range(9)
_REASONS = {  # what a client is told (TOO_LARGE and UNDECODABLE are composed per row in `_row_errors`)
    EMPTY: "empty (0 bytes)",
    NOT_AN_IMAGE: "not an image (JPEG, PNG, GIF, BMP or WebP expected)",
    TIFF: "TIFF is not supported by the in-graph decoder; send JPEG or PNG",
    HEIF: "HEIF/AVIF/MP4 is not supported; send JPEG or PNG",
    JPEG_XL: "JPEG XL is not supported; send JPEG or PNG",
    ANIMATED_WEBP: "animated WebP is not supported; send a still image (JPEG, PNG or a still WebP)",
}
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


def _inspect(data: tf.Tensor):
    """What the first bytes of one encoded image say, without decoding it (no op here can fail).

    Returns:
        raw: int64 (N + pad,), the header bytes (see `_header`).
        kind: {format: bool scalar} for SUPPORTED_FORMATS.
        refusal: int32 scalar, the first row code (see `decode_rows`) that refuses the bytes from their header
            (EMPTY, an unsupported format, NOT_AN_IMAGE), or DECODED where they may be decoded.
    """
    raw = _header(data)  # (N + pad,)
    kind = {
        "JPEG": _matches(raw, 0, b"\xff\xd8\xff"),
        "PNG": _matches(raw, 0, b"\x89PNG\r\n\x1a\n"),
        "GIF": _matches(raw, 0, b"GIF87a") | _matches(raw, 0, b"GIF89a"),
        "BMP": _matches(raw, 0, b"BM"),
        "WebP": _matches(raw, 0, b"RIFF") & _matches(raw, 8, b"WEBP"),
    }
    known = tf.reduce_any(tf.stack(list(kind.values())))
    unsupported = {  # recognised formats the in-graph decoders cannot (or must not) read
        TIFF: _matches(raw, 0, b"II*\x00") | _matches(raw, 0, b"MM\x00*"),
        HEIF: _matches(raw, 4, b"ftyp"),
        JPEG_XL: _matches(raw, 0, b"\xff\x0a") | _matches(raw, 4, b"JXL "),
        # VP8X flag bit 1: animation. TensorFlow's WebP decoder corrupts the heap on animated WebP.
        ANIMATED_WEBP: kind["WebP"] & _matches(raw, 12, b"VP8X") & tf.equal(tf.bitwise.bitwise_and(raw[20], 2), 2),
    }
    refusal = tf.where(known, DECODED, NOT_AN_IMAGE)  # checked in the strict decoder's order: the first one wins
    for code in sorted(unsupported, reverse=True):
        refusal = tf.where(unsupported[code], code, refusal)
    refusal = tf.where(tf.strings.length(data) > 0, refusal, EMPTY)
    return raw, kind, tf.cast(refusal, tf.int32)


def _decode_known(data: tf.Tensor, raw: tf.Tensor, kind: dict[str, tf.Tensor], width_height: tf.Tensor,
                  size: int | None) -> tf.Tensor:
    """Decodes bytes of a supported format (checked) to RGB uint8 (H, W, 3), or float32 (S, S, 3) with `size`."""
    gray16 = kind["PNG"] & tf.equal(raw[24], 16) & tf.equal(raw[25], 0)  # IHDR bit depth 16, colour type 0
    image = tf.cond(
        kind["JPEG"],
        lambda: _orient(_decode_jpeg(data, width_height[0], width_height[1], size), _exif_orientation(raw)),
        lambda: _decode_other(data, gray16))
    image = _to_rgb(image)  # (H, W, 3) uint8
    if size is None:
        return image
    return resize_image(image, size)  # (S, S, 3)


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
    raw, kind, refusal = _inspect(data)
    checks = [tf.debugging.Assert(tf.not_equal(refusal, EMPTY), [tf.strings.join([label, ": empty (0 bytes)"])])]
    for code in (TIFF, HEIF, JPEG_XL, ANIMATED_WEBP):
        checks.append(tf.debugging.Assert(tf.not_equal(refusal, code),
                                          [tf.strings.join([label, ": ", _REASONS[code]])]))
    checks.append(tf.debugging.Assert(tf.not_equal(refusal, NOT_AN_IMAGE), [tf.strings.join([
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
    return _decode_known(data, raw, kind, width_height, size)


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


class RowDecoding(NamedTuple):
    """`decode_rows`' answer for a batch of B encoded images, G of which decoded.

    Args:
        rows: int32 (G,). The batch indices of the decoded images, ascending.
        images: tuple of float32 (G, S, S, 3) in 0..255, one per requested size, in the order of `sizes`.
        errors: string (B,). "" for a decoded row, else "image i: <reason>" (i the row's index from 0).
    """

    rows: tf.Tensor
    images: tuple
    errors: tf.Tensor


def decode_rows(data, sizes: Sequence[int], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> RowDecoding:
    """A batch of encoded images -> the decoded ones and an error per row: a bad image fails only its own row.

    Each row is decoded exactly as `decode_image` decodes it (the same ops, so the same pixels), once per size.
    Rows that the header refuses (empty, not an image, TIFF / HEIF / JPEG XL, animated WebP, more than
    `max_pixels`) never reach a decoder. Bytes that a decoder refuses (truncated or corrupt data) cannot be told in
    advance, and a graph cannot catch an op error, except tf.data: the whole batch is decoded as one dataset
    element whose errors are ignored, and only where that element fails is every row decoded as its own element,
    so the rows whose element is missing are the undecodable ones. A batch of good images thus pays one dataset
    element, not B.

    Args:
        data: string (B,). Encoded images.
        sizes: S of every encoder input, distinct (an ensemble may have several).
        max_pixels: int. Larger images (by their header) fail their row before decoding.

    Returns:
        RowDecoding: the decoded rows, their images per size, and an error string per row.
    """
    data = tf.convert_to_tensor(data, tf.string)
    sizes = tuple(int(s) for s in sizes)
    batch = tf.shape(data)[0]
    specs = (tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64),
             tuple(tf.TensorSpec([s, s, 3], tf.float32) for s in sizes))

    def whole(images):  # (B,) -> codes (B,), width_height (B, 2), rows (G,), images (G, S, S, 3) per size
        codes, width_height, decoded = tf.map_fn(lambda x: _decode_row(x, sizes, max_pixels), images,
                                                 fn_output_signature=specs)
        rows = tf.cast(tf.reshape(tf.where(tf.equal(codes, DECODED)), [-1]), tf.int32)  # (G,)
        every = tf.equal(tf.size(rows), batch)
        decoded = tuple(tf.cond(every, lambda x=x: x, lambda x=x: tf.gather(x, rows)) for x in decoded)
        return codes, width_height, rows, decoded

    def scattered(index, codes, width_height, decoded):  # the rows that decoded, each its own element
        kept = tf.equal(codes, DECODED)  # (G',) rows the header refused come back too, with a blank image
        all_codes = tf.tensor_scatter_nd_update(tf.fill([batch], UNDECODABLE), index[:, None], codes)  # (B,)
        all_sizes = tf.tensor_scatter_nd_update(tf.zeros([batch, 2], tf.int64), index[:, None], width_height)
        return (all_codes, all_sizes, tf.boolean_mask(index, kept),
                tuple(tf.boolean_mask(x, kept) for x in decoded))

    def nothing(_):  # every row undecodable (made only where reached)
        return (tf.fill([batch], UNDECODABLE), tf.zeros([batch, 2], tf.int64), tf.zeros([0], tf.int32),
                tuple(tf.zeros([0, s, s, 3]) for s in sizes))

    first = tf.data.Dataset.from_tensors(data).map(whole).ignore_errors()
    one_by_one = (tf.data.Dataset.from_tensor_slices((tf.range(batch), data))
                  .map(lambda i, x: (i, *_decode_row(x, sizes, max_pixels))).ignore_errors()
                  .batch(tf.cast(tf.maximum(batch, 1), tf.int64)).map(scattered))
    fallback = tf.data.Dataset.range(1).map(nothing)
    # Lazy: `one_by_one` only runs where `first` yielded nothing, `fallback` where neither did.
    codes, width_height, rows, images = first.concatenate(one_by_one).concatenate(fallback).take(1) \
        .get_single_element()
    rows.set_shape([None])
    for image, s in zip(images, sizes):
        image.set_shape([None, s, s, 3])
    return RowDecoding(rows, tuple(images), _row_errors(data, codes, width_height, max_pixels))


def _decode_row(data: tf.Tensor, sizes: tuple[int, ...], max_pixels: int):
    """One row of `decode_rows`: (code int32 (), width_height int64 (2,), float32 (S, S, 3) per size).

    Raises only where a decoder refuses the bytes (truncated or corrupt data); every other refusal is a code, with
    blank images, and skips the decoders.
    """
    raw, kind, refusal = _inspect(data)
    blank = tuple(tf.zeros([s, s, 3]) for s in sizes)

    def measured():
        width_height = _dimensions(data, raw, kind)  # (2,) (libjpeg's header parser may refuse a broken JPEG)
        return tf.cond(
            width_height[0] * width_height[1] > max_pixels,
            lambda: (tf.constant(TOO_LARGE), width_height, blank),
            lambda: (tf.constant(DECODED), width_height,
                     tuple(_decode_known(data, raw, kind, width_height, s) for s in sizes)))

    return tf.cond(tf.equal(refusal, DECODED), measured, lambda: (refusal, tf.zeros([2], tf.int64), blank))


def _row_errors(data: tf.Tensor, codes: tf.Tensor, width_height: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """string (B,): "" where codes is DECODED, else "image i: reason".

    Undecodable bytes are called truncated where the file lacks its format's ending (JPEG's EOI marker, PNG's IEND
    chunk, GIF's trailer byte, or fewer bytes than the BMP / RIFF header's file size), else corrupt.
    """
    length = tf.strings.length(data)  # (B,)
    padded = tf.strings.join([data, "\0" * 16])  # reads past a short file's end give zero bytes

    def starts(position: int, signature: bytes):
        return tf.equal(tf.strings.substr(padded, position, len(signature)), signature)  # (B,)

    def ends(signature: bytes):
        return (length >= len(signature)) & tf.equal(
            tf.strings.substr(data, tf.maximum(length - len(signature), 0), tf.fill(tf.shape(data),
                                                                                     len(signature))), signature)

    def uint32_le(position: int):
        parts = tf.io.decode_raw(tf.strings.substr(padded, position, 4), tf.uint8)  # (B, 4)
        parts = tf.cast(tf.reshape(parts, [-1, 4]), tf.int64)  # (B, 4) also where B = 0
        return tf.reduce_sum(parts * tf.constant([1, 256, 256 ** 2, 256 ** 3], tf.int64), axis=-1)  # (B,)

    file_size = tf.cast(length, tf.int64)  # (B,)
    formats = [  # (name, is this format, is the file complete)
        ("JPEG", starts(0, b"\xff\xd8\xff"), ends(b"\xff\xd9")),
        ("PNG", starts(0, b"\x89PNG\r\n\x1a\n"), ends(b"IEND\xaeB`\x82")),
        ("GIF", starts(0, b"GIF87a") | starts(0, b"GIF89a"), ends(b"\x3b")),
        ("BMP", starts(0, b"BM"), uint32_le(2) <= file_size),
        ("WebP", starts(0, b"RIFF") & starts(8, b"WEBP"), uint32_le(4) + 8 <= file_size),
    ]
    name, complete = tf.fill(tf.shape(data), "image"), tf.ones(tf.shape(data), tf.bool)
    for fmt, matches, intact in reversed(formats):
        name = tf.where(matches, fmt, name)
        complete = tf.where(matches, intact, complete)
    undecodable = tf.strings.join([tf.where(complete, "corrupt ", "truncated "), name])  # (B,)
    too_large = tf.strings.join(["too large: ", tf.strings.as_string(width_height[:, 0]), " x ",
                                 tf.strings.as_string(width_height[:, 1]),
                                 f" pixels is more than max_pixels={max_pixels}"])  # (B,)
    fixed = tf.gather(tf.constant([_REASONS.get(code, "") for code in range(UNDECODABLE + 1)]), codes)  # (B,)
    reason = tf.where(tf.equal(codes, TOO_LARGE), too_large, tf.where(tf.equal(codes, UNDECODABLE), undecodable,
                                                                      fixed))
    labelled = tf.strings.join(["image ", tf.strings.as_string(tf.range(tf.size(codes))), ": ", reason])
    return tf.where(tf.equal(codes, DECODED), "", labelled)
