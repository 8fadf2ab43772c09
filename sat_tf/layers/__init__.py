"""Keras layers of the Show, Attend and Tell decoder.

Shape letters used across sat_tf: B batch, L annotation locations, D annotation depth, A attention MLP size,
T caption steps, V vocabulary, E embedding, H LSTM units, K beams.
"""

from sat_tf.layers.attention_lstm_cell import AttentionLSTMCell
from sat_tf.layers.attention_rnn import AttentionRNN
from sat_tf.layers.hard_attention import HardAttention
from sat_tf.layers.soft_attention import SoftAttention

__all__ = ["AttentionLSTMCell", "AttentionRNN", "HardAttention", "SoftAttention"]
