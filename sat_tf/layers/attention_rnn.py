"""The attention LSTM as a Keras RNN layer: `keras.layers.RNN(AttentionLSTMCell)` over a caption's word embeddings.

Shapes: B batch, T steps, L locations, D annotation depth, E embedding, H units, V vocabulary.
"""

from __future__ import annotations

import keras
from keras import ops

from sat_tf.layers.attention_lstm_cell import AttentionLSTMCell


@keras.saving.register_keras_serializable(package="sat_tf")
class AttentionRNN(keras.layers.Layer):
    """Teacher forcing with a stock `keras.layers.RNN` around an `AttentionLSTMCell` (paper sec. 3.1.2).

    Keras 3's RNN hands its cell only (inputs, states); the layer binds the annotations of each call to the cell
    (`AttentionLSTMCell.attending`) and starts from the cell's f_init state. Its logits equal the Captioner's own
    (faster, unrolled) teacher forcing; the Captioner does not use this layer.

    Args:
        cell: AttentionLSTMCell, or its serialized config.

    Call arguments:
        embeddings: (B, T, E) embeddings of y_0 .. y_{T-1}.
        annotations: (B, L, D).
        training: bool. Dropout, and sampling for hard attention.

    Returns:
        logits (B, T, V) of y_1 .. y_T.
    """

    def __init__(self, cell, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if not isinstance(cell, AttentionLSTMCell):
            raise ValueError(f"AttentionRNN wraps an AttentionLSTMCell, got {type(cell).__name__}")
        self.cell = cell
        self.rnn = keras.layers.RNN(cell, return_sequences=True, name="rnn")

    def build(self, embeddings_shape=None, annotations_shape=None):
        if not self.cell.built:
            self.cell.build()
        self.built = True

    def call(self, embeddings, annotations, training=None):
        annotations = ops.cast(annotations, self.cell.compute_dtype)
        state = self.cell.initial_state(annotations)  # [h_0, c_0], (B, H) each
        with self.cell.attending(annotations):
            return self.rnn(embeddings, initial_state=state, training=training)  # (B, T, V)

    def compute_output_shape(self, embeddings_shape, annotations_shape=None):
        return tuple(embeddings_shape[:2]) + (self.cell.vocab_size,)

    def get_config(self):
        config = super().get_config()
        config.update({"cell": keras.saving.serialize_keras_object(self.cell)})
        return config
