"""The hard-attention train step's gradient is an unbiased estimate of the gradient of the lower bound L_s.

With L = 3 locations and T = 2 steps there are 9 location sequences s, so
    L_s = sum_s p(s | a) log p(y | s, a)                          (paper eq. 10)
and its exact gradient can be computed by enumeration. The train step's loss (with lambda_e = 0) is
    (1/N) sum_b [-log p(y | s_b, a) - stop_grad(log p(y | s_b, a) - b) log p(s_b | a)],  s_b ~ p(s | a),
whose gradient has expectation -(1/T) grad L_s when all B captions have T tokens (N = B T).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf.models.captioner import Captioner

L, D, T = 3, 4, 2


def _setup(seed=0, reinforce_baseline="moving_average"):
    keras.utils.set_random_seed(seed)  # the weights too, so the test is the same on every run
    model = Captioner(vocab_size=6, feature_dim=D, embedding_dim=4, units=5, attention_dim=4, attention="hard",
                      dropout=0.0, alpha_regularization=0.0, entropy_weight=0.0, expected_context_prob=0.0, seed=seed,
                      reinforce_baseline=reinforce_baseline)
    # Sharper attention and larger annotations than at initialisation, so that locations matter.
    rng = np.random.RandomState(seed)
    for w in model.cell.attention.trainable_weights:
        w.assign(w.numpy() * 4.0)
    annotations = rng.randn(1, L, D).astype("float32") * 3.0
    tokens = np.array([[1, 3, 2]], "int32")  # <start> w <end>: T = 2 predicted tokens
    model.baseline.assign(-2.5)  # any baseline independent of the sample keeps the estimate unbiased
    model.baseline_updates.assign(1.0)
    return model, annotations, tokens


def _exact_gradient(model, annotations, tokens):
    paths = np.array([[i, j] for i in range(L) for j in range(L)], "int32")  # (9, T)
    a = np.repeat(annotations, len(paths), axis=0)
    y = np.repeat(tokens, len(paths), axis=0)
    with tf.GradientTape() as tape:
        out = model.teacher_forcing(a, y, training=True, locations=paths)
        log_p_y = -tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"]), 1)
        log_p_s = tf.reduce_sum(out["log_prob"], 1)
        bound = tf.reduce_sum(tf.exp(log_p_s) * log_p_y)  # L_s
    np.testing.assert_allclose(tf.reduce_sum(tf.exp(log_p_s)), 1.0, rtol=1e-5)
    grads = tape.gradient(bound, model.trainable_weights)
    return [-tf.convert_to_tensor(g) / T if g is not None else tf.zeros_like(w)
            for g, w in zip(grads, model.trainable_weights)]


def _flat(grads):
    return np.concatenate([tf.reshape(tf.convert_to_tensor(g), [-1]).numpy() for g in grads])


def _estimates(model, annotations, tokens, reinforce_on=True, batches=24, batch=1500):
    a = np.repeat(annotations, batch, axis=0)
    y = np.repeat(tokens, batch, axis=0)
    out = []
    for i in range(batches):
        with tf.GradientTape() as tape:
            fwd = model.teacher_forcing(a, y, training=True, seed=tf.constant([11, i]),
                                        use_expected=tf.constant(False))
            # on the tape, so that a gradient leaking through the expected-context baseline would show as bias
            reference = model.reinforce_reference(a, y, True)
            terms = model.loss_terms(fwd, sampled=reinforce_on, reference=reference)
        grads = tape.gradient(terms["loss"], model.trainable_weights)
        out.append(_flat([g if g is not None else tf.zeros_like(w) for g, w in zip(grads, model.trainable_weights)]))
    return np.stack(out)  # (batches, P)


@pytest.mark.parametrize("reinforce_baseline", ["moving_average", "expected_context"])
def test_reinforce_gradient_is_unbiased(reinforce_baseline):
    model, annotations, tokens = _setup(reinforce_baseline=reinforce_baseline)
    exact = _flat(_exact_gradient(model, annotations, tokens))
    est = _estimates(model, annotations, tokens)
    mean = est.mean(0)
    stderr = est.std(0, ddof=1) / np.sqrt(len(est))
    # Standard error with a floor: a few parameters barely depend on the sampled path, and their float32
    # rounding differences would otherwise divide by ~0.
    stderr = stderr + 1e-4 * np.abs(exact).max()
    z = (mean - exact) / stderr
    # Unbiased: mean(z^2) stays below 1 (seeds 0..3 gave 0.01-0.29); any real bias pushes it far above.
    assert np.mean(z ** 2) < 1.5, f"mean z^2 {np.mean(z ** 2):.2f}, max |z| {np.max(np.abs(z)):.2f}"
    assert np.linalg.norm(mean - exact) < 0.05 * np.linalg.norm(exact)

    # The test has power: without the REINFORCE term (pure backprop through the sampled path) the estimate misses
    # the score-function part of the gradient, and the same statistic flags it (seeds 0..3: 5.4-31.6).
    biased = _estimates(model, annotations, tokens, reinforce_on=False).mean(0)
    z_biased = (biased - exact) / stderr
    assert np.mean(z_biased ** 2) > 3.0, f"mean z^2 without REINFORCE only {np.mean(z_biased ** 2):.2f}"


@pytest.mark.parametrize("weight", [0.5, -0.5])
def test_the_entropy_term_raises_attention_entropy_and_a_negative_weight_lowers_it(weight):
    """lambda_e > 0 is the paper's entropy bonus; lambda_e < 0 (`model.entropy_weight=-0.1`, the entropy penalty
    of docs/results.md) penalises the entropy: a gradient step on the loss's entropy term moves H[s] accordingly."""
    keras.utils.set_random_seed(0)
    model = Captioner(vocab_size=6, feature_dim=D, embedding_dim=4, units=5, attention_dim=4, attention="hard",
                      dropout=0.0, alpha_regularization=0.0, reinforce_weight=0.0, entropy_weight=weight,
                      expected_context_prob=0.0, seed=0)
    annotations = np.random.RandomState(0).randn(4, L, D).astype("float32") * 3.0
    tokens = np.array([[1, 3, 4, 2]] * 4, "int32")
    weights = model.cell.attention.trainable_weights

    def entropy_and_gradient():
        with tf.GradientTape() as tape:
            fwd = model.teacher_forcing(annotations, tokens, training=True, seed=tf.constant([3, 4]),
                                        use_expected=tf.constant(False))
            terms = model.loss_terms(fwd, sampled=tf.constant(True))
            entropy_part = terms["loss"] - terms["xent"] - terms["reinforce"]  # = -lambda_e * H
        np.testing.assert_allclose(entropy_part, -weight * terms["entropy"], rtol=1e-5)
        return float(terms["entropy"]), tape.gradient(entropy_part, weights)

    before, grads = entropy_and_gradient()
    for w, g in zip(weights, grads):
        w.assign_sub(0.05 * g)
    after, _ = entropy_and_gradient()
    assert np.sign(after - before) == np.sign(weight) and abs(after - before) > 1e-4, (before, after)
