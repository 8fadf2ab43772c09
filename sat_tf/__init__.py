"""sat_tf: Show, Attend and Tell (Xu et al., ICML 2015, arXiv:1502.03044) in TensorFlow/Keras 3.

The commands are `python -m sat_tf.train`, `sat_tf.evaluate`, `sat_tf.caption`, `sat_tf.export` and `sat_tf.lite`;
the configs are `sat_tf.config`. The sub-packages, in the order the data flows (docs/architecture.md):
`sat_tf.images` (files and bytes -> RGB pixels), `sat_tf.models` (encoder, Captioner) and `sat_tf.layers`
(attention, the attention-LSTM cell), `sat_tf.text` (the vocabulary), `sat_tf.pipelines` (datasets -> TFRecord
features -> tf.data), `sat_tf.training` (fit, the work dir), `sat_tf.decoding` (greedy and beam search),
`sat_tf.evaluation` and `sat_tf.metrics` (scores, the report), `sat_tf.inference` (captions of files),
`sat_tf.export` (SavedModel for TF Serving, TFLite, presets), `sat_tf.presets` (the shipped trained models) and
`sat_tf.lite` (TFLite captions without TensorFlow).
`sat_tf.files` (atomic writes) and `sat_tf.visualize` (the attention figure) are shared by several of them.
"""

__version__ = "0.1.0"
