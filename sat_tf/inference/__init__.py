"""Inference: captions of image files, one result per file, the same from every captioner.

    image_captioner.py   ImageCaptioner: a work dir or preset (encoder + Captioner) -> captions and attention of
                         image files, batched; bad files get an error, never stop the others (TensorFlow)
    captioned.py         Captioned: one image's result (caption, words, attention, log-prob or error); numpy only
    caption_writer.py    CaptionWriter: results to JSON Lines, CSV or TSV as they are made; standard library only

`python -m sat_tf.caption` is the command; `sat_tf.lite` captions with an exported TFLite model and shares
`captioned` and `caption_writer`. That is why this package imports nothing: `from sat_tf.inference.captioned import
Captioned` must not import TensorFlow (tests/lite/test_no_tensorflow.py), so ImageCaptioner is imported from its module
(`from sat_tf.inference.image_captioner import ImageCaptioner`).
"""
