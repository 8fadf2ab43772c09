"""Deterministic soft attention, f_att and z_t = sum_i alpha_ti a_i (Xu et al. 2015, sec. 4.2).

Shapes: B batch, L locations, D annotation depth, A attention size, H hidden size, K beams (rows per image),
N = B*K rows.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


class SharedAnnotations:
    """Annotations (B, L, D) attended by N = B*K decoder rows, K consecutive rows per image (beam search, K sampled
    captions): row n attends image n // K, K being inferred from N.

    Passed to `attend` (and `HardAttention.select`) in place of the (B*K, L, D) tensor that repeating every image
    K times would give, with `projected` then (B, L, A) instead of (B*K, L, A). The results are those of the
    repeated annotations (up to float summation order), but each step reads the annotations and their projection
    once per image instead of K times, and computes the K contexts of an image as one (K, L) x (L, D) product.
    """

    __slots__ = ("values",)

    def __init__(self, values):
        self.values = values  # (B, L, D)

    def rows(self, x):
        """(N, ...) rows in image-major order -> (B, K, ...)."""
        return tf.reshape(x, tf.concat([[tf.shape(self.values)[0], -1], tf.shape(x)[1:]], 0))

    @staticmethod
    def flat(x):
        """(B, K, ...) -> (N, ...)."""
        return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))


@keras.saving.register_keras_serializable(package="sat_tf")
class SoftAttention(keras.layers.Layer):
    """The paper's attention MLP: e_ti = w^T tanh(W_a a_i + W_h h_{t-1} + b), alpha_t = softmax_i(e_t).

    The annotation term W_a a_i + b does not depend on t, so `project_annotations` computes it once per image and
    every decoding step reuses it; `attend` then costs one (B, H) x (H, A) product plus O(B L A) element-wise work.

    Args:
        units: int. A, the hidden size of the attention MLP.

    Call arguments:
        annotations: (B, L, D) annotation vectors a.
        hidden: (B, H) previous LSTM state h_{t-1}.
        projected: optional (B, L, A) result of `project_annotations(annotations)`.

    Returns:
        `(context, alpha)`: z_t of shape (B, D) and alpha_t of shape (B, L).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.annotation_projection = keras.layers.Dense(units, name="annotation_projection")  # W_a, b
        self.hidden_projection = keras.layers.Dense(units, use_bias=False, name="hidden_projection")  # W_h
        self.score = keras.layers.Dense(1, use_bias=False, name="score")  # w

    def build(self, annotations_shape, hidden_shape=None, projected_shape=None):
        # Sublayers may already be built (project_annotations called before the layer itself).
        if not self.annotation_projection.built:
            self.annotation_projection.build(annotations_shape)
        if hidden_shape is not None and not self.hidden_projection.built:
            self.hidden_projection.build(hidden_shape)
        if not self.score.built:
            self.score.build((None, self.units))
        self.built = True

    def project_annotations(self, annotations):
        """W_a a + b, computed once per image. (B, L, D) -> (B, L, A)."""
        return self.annotation_projection(annotations)

    def attend(self, annotations, projected, projected_hidden):
        """One step of attention from an already projected hidden state.

        Args:
            annotations: (B, L, D), or `SharedAnnotations` for N = B*K rows (then `projected` is (B, L, A) and
                `projected_hidden` and every result have N rows).
            projected: (B, L, A), from `project_annotations`.
            projected_hidden: (B, A), W_h h_{t-1}.

        Returns:
            (context (B, D), alpha (B, L), scores (B, L)), scores being the unnormalised e_t.
        """
        if isinstance(annotations, SharedAnnotations):
            return self._attend_shared(annotations, projected, projected_hidden)
        energy = ops.tanh(projected + projected_hidden[:, None, :])  # (B, L, A)
        # w^T tanh(.) as an einsum on the kernel: Dense on a 3-D input lowers to a Tensordot with dynamic
        # transposes that XLA cannot compile inside the decoder loop's gradient.
        scores = ops.einsum("bla,a->bl", energy, ops.cast(self.score.kernel[:, 0], energy.dtype))  # (B, L)
        alpha = ops.softmax(scores, axis=-1)  # (B, L)
        context = ops.einsum("bl,bld->bd", alpha, annotations)  # (B, D)
        return context, alpha, scores

    def _attend_shared(self, shared, projected, projected_hidden):
        """`attend` for K rows per image against one (B, L, D) / (B, L, A) copy, by broadcasting over K."""
        hidden = shared.rows(projected_hidden)  # (B, K, A)
        energy = ops.tanh(projected[:, None, :, :] + hidden[:, :, None, :])  # (B, K, L, A)
        scores = ops.einsum("bkla,a->bkl", energy, ops.cast(self.score.kernel[:, 0], energy.dtype))  # (B, K, L)
        alpha = ops.softmax(scores, axis=-1)  # (B, K, L)
        context = ops.matmul(alpha, shared.values)  # (B, K, D)
        return shared.flat(context), shared.flat(alpha), shared.flat(scores)

    def call(self, annotations, hidden, projected=None):
        if projected is None:
            projected = self.project_annotations(annotations)  # (B, L, A)
        context, alpha, _ = self.attend(annotations, projected, self.hidden_projection(hidden))
        return context, alpha

    def compute_output_shape(self, annotations_shape, hidden_shape=None, projected_shape=None):
        batch, locations, depth = annotations_shape
        return (batch, depth), (batch, locations)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config
