"""Export, installed as `sat_tf.export`: SavedModel for TF Serving and TFLite for phones.

    source.py          ExportSource: the trained decoder, the encoder rebuilt in front of it, vocabulary, configs
    saved_model.py     SavedModel with in-graph decoding, beam search and detokenisation (TF Serving)
    tflite.py          builtins-only TFLite models (one-call greedy; encode/step), float32/float16/int8
    keras_format.py    captioner.keras and encoder.keras
    __main__.py        `python -m sat_tf.export`

Running the TFLite models (LiteRT, greedy and beam search in numpy, no TensorFlow) is `sat_tf.lite`.
"""
