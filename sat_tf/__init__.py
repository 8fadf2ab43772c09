"""sat_tf: Show, Attend and Tell (Xu et al., ICML 2015, arXiv:1502.03044) in TensorFlow/Keras 3.

Sub-packages: `sat_tf.layers` (attention and the attention-LSTM cell), `sat_tf.models` (encoder, Captioner),
`sat_tf.decoding` (greedy and beam search), `sat_tf.pipelines` (datasets -> TFRecord features -> tf.data) and
`sat_tf.export` (SavedModel for TF Serving, TFLite).
"""

import os as _os

__version__ = "0.1.0"

# In a source checkout `pipelines/` and `export/` sit beside this package; setup.py installs them as
# `sat_tf.pipelines` and `sat_tf.export`. Adding the checkout root to this package's search path makes the same
# import names work in the checkout, so tests and `python -m sat_tf...` behave the same before and after install.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "pipelines")) and _os.path.isfile(
        _os.path.join(_checkout, "pipelines", "__init__.py")):
    __path__.append(_checkout)  # noqa: F821 (module __path__)
