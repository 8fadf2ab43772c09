"""The attention LSTM decoder cell with the deep output layer (Xu et al. 2015, sec. 3.1.2).

One step, with a the annotations (B, L, D) and y_{t-1} the previous word:
    alpha_t, z_t = f_att(a, h_{t-1})                  attention (soft or hard)
    beta_t = sigmoid(f_beta(h_{t-1}))                 gating scalar (sec. 4.2.1)
    i, f, o, g = W_x E y_{t-1} + W_z beta_t z_t + U h_{t-1} + b
    c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g);  h_t = sigmoid(o) tanh(c_t)
    p(y_t) = softmax(L_o tanh(E y_{t-1} + L_h h_t + L_z beta_t z_t))          deep output (eq. 7)
and h_0 = tanh(W_h0 mean_i a_i), c_0 = tanh(W_c0 mean_i a_i) (the f_init MLPs).

The step is split so that teacher forcing does as little as possible inside the recurrence: `project_inputs`
(W_x E y for every t at once) and `output_logits` (the deep output for every t at once) run outside the loop,
and the three matrices that multiply h_{t-1} (W_h of the attention MLP, f_beta and U) are concatenated into one
(H, A + G + 4H) kernel so each step does a single matmul with h_{t-1}.

Shapes: B batch, L locations, D annotation depth, A attention size, H units, E embedding, V vocabulary,
G gate width (1 for the paper's scalar gate, D per channel, 0 without gate).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops

from sat_tf.layers.hard_attention import HardAttention
from sat_tf.layers.soft_attention import SoftAttention


@keras.saving.register_keras_serializable(package="sat_tf")
class AttentionLSTMCell(keras.layers.Layer):
    """LSTM cell with visual attention, gating scalar and deep output, in the Keras RNN-cell style.

    `state_size` is [H, H] (h, c), `output_size` is V and `call(inputs, states, annotations=...)` returns
    `(logits, [h, c])`. Keras 3's `RNN` passes a cell only its inputs and states, so `keras.layers.RNN(cell)` runs
    inside `with cell.attending(annotations):`, which binds the annotations for the call (`AttentionRNN` does
    this, with the f_init initial state). Decoding (greedy and beam search) calls the cell step by step; the
    Captioner's teacher-forced pass uses the split methods below.

    Args:
        units: int. H, LSTM size.
        vocab_size: int. V.
        embedding_dim: int. E, size of the word embeddings E y fed in as `inputs`.
        feature_dim: int. D, depth of each annotation vector.
        attention_dim: int. A, hidden size of the attention MLP.
        attention: str. "soft" or "hard".
        gate: str. "scalar" (paper), "channel" or "none".
        dropout: float. Dropout on h_t and on the deep-output pre-activation, as the authors' code.
        expected_context_prob: float. Hard attention only, see `HardAttention`.
        hard_inference: str. Hard attention only, see `HardAttention`.
        seed: int or None. Seed for dropout and the hard-attention sampler.
    """

    def __init__(self, units: int, vocab_size: int, embedding_dim: int, feature_dim: int, attention_dim: int,
                 attention: str = "soft", gate: str = "scalar", dropout: float = 0.0,
                 expected_context_prob: float = 0.5, hard_inference: str = "expected", seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if attention not in ("soft", "hard"):
            raise ValueError(f"attention must be 'soft' or 'hard', got {attention!r}")
        if gate not in ("scalar", "channel", "none"):
            raise ValueError(f"gate must be 'scalar', 'channel' or 'none', got {gate!r}")
        self.units = units
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.feature_dim = feature_dim
        self.attention_dim = attention_dim
        self.attention_kind = attention
        self.gate_kind = gate
        self.dropout = dropout
        self.expected_context_prob = expected_context_prob
        self.hard_inference = hard_inference
        self.seed = seed
        self.state_size = [units, units]
        self.output_size = vocab_size
        self.gate_width = {"scalar": 1, "channel": feature_dim, "none": 0}[gate]

        if attention == "soft":
            self.attention = SoftAttention(attention_dim, name="attention")
        else:
            self.attention = HardAttention(attention_dim, expected_context_prob=expected_context_prob,
                                           inference=hard_inference, seed=seed, name="attention")
        self.init_h = keras.layers.Dense(units, activation="tanh", name="init_h")  # f_init,h
        self.init_c = keras.layers.Dense(units, activation="tanh", name="init_c")  # f_init,c
        self.input_projection = keras.layers.Dense(4 * units, use_bias=False, name="input_projection")  # W_x
        self.context_projection = keras.layers.Dense(4 * units, use_bias=False, name="context_projection")  # W_z
        self.recurrent_projection = keras.layers.Dense(4 * units, use_bias=False, name="recurrent_projection")  # U
        self.gate = keras.layers.Dense(self.gate_width, name="gate") if self.gate_width else None  # f_beta
        self.hidden_output = keras.layers.Dense(embedding_dim, name="hidden_output")  # L_h
        self.context_output = keras.layers.Dense(embedding_dim, use_bias=False, name="context_output")  # L_z
        self.output_projection = keras.layers.Dense(vocab_size, name="output_projection")  # L_o
        self.hidden_dropout = keras.layers.Dropout(dropout, seed=seed, name="hidden_dropout")
        self.output_dropout = keras.layers.Dropout(dropout, seed=None if seed is None else seed + 1,
                                                   name="output_dropout")
        self._bound_annotations = None  # set by `attending`

    def build(self, inputs_shape=None, *args, **kwargs):
        # Every size is a constructor argument, so the cell builds the same whatever it is first called with.
        d, h, e = self.feature_dim, self.units, self.embedding_dim
        self.attention.build((None, None, d), (None, h))
        self.init_h.build((None, d))
        self.init_c.build((None, d))
        self.input_projection.build((None, e))
        self.context_projection.build((None, d))
        self.recurrent_projection.build((None, h))
        if self.gate is not None:
            self.gate.build((None, h))
        self.hidden_output.build((None, h))
        self.context_output.build((None, d))
        self.output_projection.build((None, e))
        # LSTM bias, gate order i, f, g, o; forget gate starts at 1 (Jozefowicz et al. 2015).
        self.lstm_bias = self.add_weight(shape=(4 * h,), initializer="zeros", name="lstm_bias")
        self.lstm_bias.assign(np.concatenate([np.zeros(h), np.ones(h), np.zeros(2 * h)]).astype("float32"))
        self.built = True

    # -- pieces of one step ---------------------------------------------------------------------------------

    def initial_state(self, annotations):
        """[h_0, c_0] from the mean annotation. (B, L, D) -> 2 x (B, H)."""
        mean = ops.mean(annotations, axis=1)  # (B, D)
        return [self.init_h(mean), self.init_c(mean)]

    def prepare(self, annotations):
        """W_a a + b of the attention MLP, once per image. (B, L, D) -> (B, L, A)."""
        return self.attention.project_annotations(annotations)

    def project_inputs(self, embeddings):
        """W_x E y + b for any leading shape. (..., E) -> (..., 4H)."""
        return self.input_projection(embeddings) + ops.cast(self.lstm_bias, self.compute_dtype)

    def recurrent_kernel(self):
        """[W_h^att | W_beta | U]: everything that multiplies h_{t-1}, as one (H, A + G + 4H) matrix."""
        parts = [self.attention.hidden_projection.kernel]
        if self.gate is not None:
            parts.append(self.gate.kernel)
        parts.append(self.recurrent_projection.kernel)
        return ops.cast(ops.concatenate(parts, axis=1), self.compute_dtype)

    def step(self, projected_input, states, annotations, projected, kernel, mode: str = "expected", seed=None,
             use_expected=None, location=None, rows=None):
        """The recurrent part of one step (everything that depends on h_{t-1}).

        Args:
            projected_input: (B, 4H), `project_inputs(E y_{t-1})`.
            states: [h (B, H), c (B, H)].
            annotations: (B, L, D); projected: (B, L, A) from `prepare`; kernel: from `recurrent_kernel`.
            mode, seed, use_expected, location, rows: hard attention only, see `HardAttention.select`.

        Returns:
            (h_t, c_t, extras) where extras has `context` (B, D) (gated, beta_t z_t), `alpha` (B, L), `beta`
            (B, G) or None, and for hard attention `location` (B,), `log_prob` (B,), `entropy` (B,).
        """
        h, c = states
        a_dim, g_dim = self.attention_dim, self.gate_width
        fused = ops.matmul(h, kernel)  # (B, A + G + 4H)
        hidden_att = fused[:, :a_dim]  # (B, A)
        recurrent = fused[:, a_dim + g_dim:]  # (B, 4H)
        context, alpha, scores = self.attention.attend(annotations, projected, hidden_att)  # (B, D), (B, L)
        extras = {"alpha": alpha}
        if self.attention_kind == "hard":
            context, location, log_prob, entropy = self.attention.select(
                annotations, context, scores, mode, seed, use_expected, location, rows)
            extras.update(location=location, log_prob=log_prob, entropy=entropy)
        beta = None
        if self.gate is not None:
            beta = ops.sigmoid(fused[:, a_dim:a_dim + g_dim] + ops.cast(self.gate.bias, self.compute_dtype))
            context = beta * context  # (B, D)
        extras["beta"] = beta
        extras["context"] = context
        gates = projected_input + recurrent + self.context_projection(context)  # (B, 4H)
        i, f, g, o = ops.split(gates, 4, axis=-1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)  # (B, H)
        h = ops.sigmoid(o) * ops.tanh(c)  # (B, H)
        return h, c, extras

    def output_logits(self, embeddings, h, context, training=None):
        """Deep output L_o tanh(E y_{t-1} + L_h h_t + L_z z_t) for any leading shape. -> (..., V)."""
        h = self.hidden_dropout(h, training=training)
        pre = ops.tanh(embeddings + self.hidden_output(h) + self.context_output(context))  # (..., E)
        pre = self.output_dropout(pre, training=training)
        return self.output_projection(pre)  # (..., V)

    # -- the RNN-cell contract ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def attending(self, annotations):
        """Within the block, `call` without `annotations` attends these (B, L, D) annotations (the calls a
        `keras.layers.RNN` makes; the block must enclose the RNN call, also while it is traced)."""
        previous = self._bound_annotations
        self._bound_annotations = annotations
        try:
            yield self
        finally:
            self._bound_annotations = previous

    def call(self, inputs, states, annotations=None, projected=None, training=None, seed=None):
        """One full step. inputs: (B, E) embedding of y_{t-1}; states: [h, c]; annotations: (B, L, D) (default:
        those bound by `attending`).

        Returns (logits (B, V), [h_t, c_t]). Hard attention samples when training, otherwise uses its inference
        mode. (`step` also gives alpha_t and the context.)
        """
        if annotations is None:
            annotations = self._bound_annotations
        if annotations is None:
            raise ValueError("AttentionLSTMCell.call needs the annotations: pass annotations=..., or run the cell "
                             "(e.g. in keras.layers.RNN) inside `with cell.attending(annotations):`, as AttentionRNN "
                             "does")
        annotations = ops.cast(annotations, self.compute_dtype)
        if projected is None:
            projected = self.prepare(annotations)  # (B, L, A)
        mode = "expected"
        if self.attention_kind == "hard":
            mode = "sample" if training else self.hard_inference
            if mode == "sample" and seed is None:
                seed = self.attention.next_seed()
        h, c, extras = self.step(self.project_inputs(inputs), states, annotations, projected,
                                 self.recurrent_kernel(), mode=mode, seed=seed)
        logits = self.output_logits(inputs, h, extras["context"], training=training)  # (B, V)
        return logits, [h, c]

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units, "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
            "feature_dim": self.feature_dim, "attention_dim": self.attention_dim, "attention": self.attention_kind,
            "gate": self.gate_kind, "dropout": self.dropout, "expected_context_prob": self.expected_context_prob,
            "hard_inference": self.hard_inference, "seed": self.seed,
        })
        return config
