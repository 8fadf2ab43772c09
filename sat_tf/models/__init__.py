"""Models: the image encoder (CNN -> annotation vectors) and, in `sat_tf.models.captioner`, the Captioner.

The captioner is imported from its own module (`from sat_tf.models.captioner import Captioner`); this package
exports only the encoder's public names so that importing it stays light.
"""

from sat_tf.models.efficientnet_lite import efficientnet_lite0
from sat_tf.models.efficientnet_lite import preprocess_input as efficientnet_lite_preprocess_input
from sat_tf.models.encoder import ENCODERS, EncoderSpec, ImagePreprocessing, build_encoder, encoder_spec

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "ImagePreprocessing",
    "build_encoder",
    "efficientnet_lite0",
    "efficientnet_lite_preprocess_input",
    "encoder_spec",
]
