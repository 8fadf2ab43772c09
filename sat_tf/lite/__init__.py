"""Captioning on a device without TensorFlow: the exported TFLite models in the LiteRT interpreter.

Needs numpy, Pillow and ai-edge-litert only (`pip install --no-deps .` then `pip install numpy pillow
ai-edge-litert`, or the `sat_tf[lite]` extra); importing `sat_tf.lite` never imports TensorFlow, Keras or
tensorflow-text (a test checks it in a fresh interpreter).

    python -m sat_tf.lite caption --model exports/sat_tf_tflite photo.jpg

    from sat_tf.lite import LiteCaptioner
    print(LiteCaptioner("exports/sat_tf_tflite").caption(["photo.jpg"])[0].caption)

Modules: `captioner` (an export directory -> captions of image files), `runtime` (the `caption` and `encode` / `step`
signatures in LiteRT), `search` (greedy and beam search with n-gram blocking in numpy, the SavedModel's rules),
`__main__` (the command). Pixels come from `sat_tf.images.load_pixels`, words from `sat_tf.text.vocabulary`, the
beam ranking from `sat_tf.decoding.ranking`: the same code the TensorFlow side uses.
"""

from sat_tf.lite.captioner import LiteCaptioner, read_export_config
from sat_tf.lite.runtime import StepDecoder, TFLiteCaptioner

__all__ = ["LiteCaptioner", "StepDecoder", "TFLiteCaptioner", "read_export_config"]
