"""Stochastic "hard" attention (Xu et al. 2015, sec. 4.1): s_t ~ Categorical(alpha_t), z_t = a_{s_t}.

The location distribution is a `tfp.distributions.Categorical` over the attention scores, so the REINFORCE
train step gets log p(s_t | a) and the entropy H[s_t] from the same object that drew the sample.

Shapes: B batch, L locations, D annotation depth, A attention size, H hidden size.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from sat_tf.layers.soft_attention import SharedAnnotations, SoftAttention

MODES = ("sample", "expected", "argmax")  # inference modes; `select` also takes "given" (a forced location)


@keras.saving.register_keras_serializable(package="sat_tf")
class HardAttention(SoftAttention):
    """Hard attention on top of the soft attention MLP (the same f_att, the same parameters).

    In training, each call draws one coin (p = `expected_context_prob`) for the whole minibatch, as the authors'
    code did: on heads the context is the expected value sum_i alpha_i a_i (paper sec. 4.1, "set the sampled
    attention location s to its expected value alpha"), otherwise z_t = a_{s_t} with s_t sampled. One coin per
    minibatch keeps every update either a pure REINFORCE update or a pure backprop update, which is what the
    paper's numbers were produced with. Outside training the layer is deterministic by default.

    Args:
        units: int. A, the hidden size of the attention MLP.
        expected_context_prob: float. Probability of a training minibatch using the expected context.
        inference: str. What to use when not training: "expected" (default, deterministic), "argmax"
            (deterministic, the single most likely location) or "sample".
        seed: int or None. Seed of the layer's own `SeedGenerator`, used when no explicit seed is passed.

    Call arguments:
        annotations: (B, L, D); hidden: (B, H); projected: optional (B, L, A); training: bool.

    Returns:
        dict with `context` (B, D), `alpha` (B, L), `location` (B,) int32, `log_prob` (B,) = log alpha_{s},
        `entropy` (B,) and `expected` (a bool scalar: whether the expected context was used).
    """

    def __init__(self, units: int, expected_context_prob: float = 0.5, inference: str = "expected",
                 seed: int | None = None, **kwargs):
        super().__init__(units, **kwargs)
        if inference not in MODES:
            raise ValueError(f"HardAttention inference must be one of {MODES}, got {inference!r}")
        self.expected_context_prob = expected_context_prob
        self.inference = inference
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def select(self, annotations, context, scores, mode: str, seed=None, use_expected=None, location=None,
               rows=None):
        """Turns one step's soft attention into the hard-attention context.

        Args:
            annotations: (B, L, D), or `SharedAnnotations` for N = B*K rows (every other argument and result
                then has N rows).
            context: (B, D), the expected context sum_i alpha_i a_i.
            scores: (B, L), the unnormalised attention logits e_t.
            mode: "sample", "expected", "argmax" or "given" (Python string, fixed at trace time).
            seed: int32 (2,) stateless seed, used when mode == "sample".
            use_expected: optional bool scalar tensor; True replaces the sampled context with `context`.
            location: (B,) int32, used when mode == "given": score and attend this location (tests enumerate
                the lower bound exactly with it).
            rows: optional (offset, total) int scalars, mode "sample": these B rows are rows offset .. offset + B - 1
                of a batch of `total` rows split over replicas; each row is drawn as that row of the whole batch
                would be, so the draw does not depend on the split. None: rows 0 .. B - 1 of B.

        Returns:
            (context (B, D), location (B,) int32, log_prob (B,), entropy (B,)).
        """
        # float32 whatever the compute dtype: under mixed precision bfloat16 logits would give log p(s_t) and H[s_t]
        # (the REINFORCE score and the entropy bonus) only ~3 significant digits.
        scores = tf.cast(scores, tf.float32)  # (B, L)
        distribution = tfp.distributions.Categorical(logits=scores)
        if mode == "sample" and rows is None:
            location = distribution.sample(seed=seed)  # (B,)
        elif mode == "sample":
            # A stateless categorical draw of row i depends only on the seed and i: draw for the whole batch, with
            # this replica's scores at its rows (zeros elsewhere), and keep those rows.
            offset, total = (tf.cast(x, tf.int32) for x in rows)
            batch = tf.shape(scores)[0]
            padded = tf.pad(scores, [[offset, total - offset - batch], [0, 0]])  # (total, L)
            whole = tfp.distributions.Categorical(logits=padded).sample(seed=seed)  # (total,)
            location = whole[offset:offset + batch]  # (B,)
        elif mode == "given":
            pass
        else:
            location = ops.argmax(scores, axis=-1)  # (B,)
        location = ops.cast(location, "int32")
        log_prob = distribution.log_prob(location)  # (B,)
        entropy = distribution.entropy()  # (B,)
        if mode == "expected":
            return context, location, log_prob, entropy
        if isinstance(annotations, SharedAnnotations):
            hard = annotations.flat(tf.gather(annotations.values, annotations.rows(location), batch_dims=1))  # (N, D)
        else:
            hard = tf.gather(annotations, location, batch_dims=1)  # (B, D)
        if use_expected is not None:
            hard = ops.where(use_expected, context, hard)
        return hard, location, log_prob, entropy

    def draw_expected_coin(self, seed, probability=None):
        """One Bernoulli draw for a whole minibatch (bool scalar): p = `probability` (a float scalar, e.g. a
        schedule's value) or `expected_context_prob`."""
        p = self.expected_context_prob if probability is None else probability
        return tf.random.stateless_uniform((), seed=seed) < p

    def next_seed(self):
        """A fresh int32 (2,) stateless seed from the layer's SeedGenerator."""
        return ops.cast(self.seed_generator.next(), "int32")

    def call(self, annotations, hidden, projected=None, training=None, seed=None):
        if projected is None:
            projected = self.project_annotations(annotations)  # (B, L, A)
        context, alpha, scores = self.attend(annotations, projected, self.hidden_projection(hidden))
        if seed is None:
            seed = self.next_seed()
        if training:
            coin_seed, sample_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            use_expected = self.draw_expected_coin(coin_seed)
            mode = "sample"
        else:
            sample_seed, use_expected, mode = seed, None, self.inference
        z, location, log_prob, entropy = self.select(annotations, context, scores, mode, sample_seed, use_expected)
        if use_expected is None:
            use_expected = tf.constant(mode == "expected")
        return {"context": z, "alpha": alpha, "location": location, "log_prob": log_prob, "entropy": entropy,
                "expected": use_expected}

    def compute_output_spec(self, annotations, hidden, projected=None, training=None, seed=None):
        batch, locations, depth = annotations.shape
        return {"context": keras.KerasTensor((batch, depth)), "alpha": keras.KerasTensor((batch, locations)),
                "location": keras.KerasTensor((batch,), dtype="int32"), "log_prob": keras.KerasTensor((batch,)),
                "entropy": keras.KerasTensor((batch,)), "expected": keras.KerasTensor((), dtype="bool")}

    def get_config(self):
        config = super().get_config()
        config.update({"expected_context_prob": self.expected_context_prob, "inference": self.inference,
                       "seed": self.seed})
        return config
