"""sat_tf: Show, Attend and Tell (Xu et al., ICML 2015, arXiv:1502.03044) in TensorFlow/Keras 3.

Sub-packages: `sat_tf.layers` (attention and the attention-LSTM cell), `sat_tf.models` (encoder, Captioner),
`sat_tf.decoding` (greedy and beam search), `sat_tf.pipelines` (datasets -> TFRecord features -> tf.data) and
`sat_tf.export` (SavedModel for TF Serving, TFLite).
"""

__version__ = "0.1.0"
