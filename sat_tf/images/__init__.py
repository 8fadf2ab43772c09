"""Images in: files, bytes and path arguments -> RGB pixels at the encoder's input size.

    load.py        Pillow: a file or bytes -> RGB uint8 (EXIF orientation, colour modes, alpha over white), or an
                   ImageError naming the file and the reason; `load_and_resize` (extraction, caption) and
                   `load_pixels` (the TFLite models)
    resize.py      the one resize policy ("squash" to S x S) in TensorFlow and, bit for bit, in numpy
    tf_decode.py   the same decoding in TensorFlow ops, for the exported SavedModel (image bytes in the graph)
    paths.py       the files, folders and glob patterns a command is given -> image files in a stable order

Importing this package does not import TensorFlow (the LiteRT runtime, `sat_tf.lite`, reads its pixels here): it
exports the Pillow and numpy side only; `tf_decode` is imported from its own module.
"""

from sat_tf.images.load import DEFAULT_MAX_PIXELS, ImageError, load_and_resize, load_image, load_pixels
from sat_tf.images.paths import IMAGE_SUFFIXES, expand_image_paths
from sat_tf.images.resize import resize_image, resize_image_numpy

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "ImageError", "expand_image_paths", "load_and_resize", "load_image",
           "load_pixels", "resize_image", "resize_image_numpy"]
