"""The hard-attention train step's gradient is an unbiased estimate of the gradient of the lower bound L_s.

With L = 3 locations and T = 2 steps there are 9 location sequences s, so
    L_s = sum_s p(s | a) log p(y | s, a)                          (paper eq. 10)
and its exact gradient can be computed by enumeration. The train step's loss (with lambda_e = 0) is
    (1/N) sum_b [-log p(y | s_b, a) - stop_grad(log p(y | s_b, a) - b) log p(s_b | a)],  s_b ~ p(s | a),
whose gradient has expectation -(1/T) grad L_s when all B captions have T tokens (N = B T). The same holds for
every estimator the model offers: the expected-context baseline, reward-to-go credit (each s_t credited with the
log-likelihood of the words from t on), and the padded `rows` sampler that draws a replica's rows of a larger
global batch. A mutation that biases an estimator (no REINFORCE term; reward-to-go that leaves out the word s_t
produced) must fail the same statistic.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf.models.captioner import Captioner

L, D, T = 3, 4, 2


def _setup(seed=0, reinforce_baseline="moving_average", reinforce_signal="caption"):
    keras.utils.set_random_seed(seed)  # the weights too, so the test is the same on every run
    model = Captioner(vocab_size=6, feature_dim=D, embedding_dim=4, units=5, attention_dim=4, attention="hard",
                      dropout=0.0, alpha_regularization=0.0, entropy_weight=0.0, expected_context_prob=0.0, seed=seed,
                      reinforce_baseline=reinforce_baseline, reinforce_signal=reinforce_signal)
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


def _estimates(model, annotations, tokens, reinforce_on=True, batches=24, batch=1500, rows=None):
    a = np.repeat(annotations, batch, axis=0)
    y = np.repeat(tokens, batch, axis=0)
    out = []
    for i in range(batches):
        with tf.GradientTape() as tape:
            fwd = model.teacher_forcing(a, y, training=True, seed=tf.constant([11, i]),
                                        use_expected=tf.constant(False), sample_rows=rows)
            # on the tape, so that a gradient leaking through the expected-context baseline would show as bias
            reference = model.reinforce_reference(a, y, True)
            terms = model.loss_terms(fwd, sampled=reinforce_on, reference=reference)
        grads = tape.gradient(terms["loss"], model.trainable_weights)
        out.append(_flat([g if g is not None else tf.zeros_like(w) for g, w in zip(grads, model.trainable_weights)]))
    return np.stack(out)  # (batches, P)


def _mean_z2(est, exact):
    """mean over parameters of z^2, z the estimate's mean error in units of its standard error; and that error."""
    stderr = est.std(0, ddof=1) / np.sqrt(len(est))
    # Standard error with a floor: a few parameters barely depend on the sampled path, and their float32
    # rounding differences would otherwise divide by ~0.
    stderr = stderr + 1e-4 * np.abs(exact).max()
    return float(np.mean(((est.mean(0) - exact) / stderr) ** 2)), stderr


ESTIMATORS = [("moving_average", "caption", None), ("expected_context", "caption", None),
              ("moving_average", "reward_to_go", None), ("expected_context", "reward_to_go", None),
              # the padded sampler of train_step: these rows are rows 700 .. 2199 of a 2600-row global batch
              ("moving_average", "caption", (700, 2600)), ("moving_average", "reward_to_go", (700, 2600))]


@pytest.mark.parametrize("reinforce_baseline, reinforce_signal, rows", ESTIMATORS)
def test_reinforce_gradient_is_unbiased(reinforce_baseline, reinforce_signal, rows):
    model, annotations, tokens = _setup(reinforce_baseline=reinforce_baseline, reinforce_signal=reinforce_signal)
    exact = _flat(_exact_gradient(model, annotations, tokens))
    est = _estimates(model, annotations, tokens, rows=rows)
    z2, stderr = _mean_z2(est, exact)
    # Unbiased: mean(z^2) stays below 1 (seeds 0..3 gave 0.01-0.29); any real bias pushes it far above.
    assert z2 < 1.5, f"mean z^2 {z2:.2f}"
    assert np.linalg.norm(est.mean(0) - exact) < 0.05 * np.linalg.norm(exact)

    # The test has power: without the REINFORCE term (pure backprop through the sampled path) the estimate misses
    # the score-function part of the gradient, and both statistics flag it (mean z^2 2.1-130 over these
    # estimators, relative error 0.089 against 0.003-0.007 unbiased).
    biased = _estimates(model, annotations, tokens, reinforce_on=False, rows=rows).mean(0)
    z_biased = (biased - exact) / stderr
    assert np.mean(z_biased ** 2) > 1.5, f"mean z^2 without REINFORCE only {np.mean(z_biased ** 2):.2f}"
    assert np.linalg.norm(biased - exact) > 0.05 * np.linalg.norm(exact)


def test_reward_to_go_that_leaves_out_the_current_word_is_caught(monkeypatch):
    """Crediting s_t only with the words after t drops the word s_t itself produced: a biased estimator, which the
    statistic above must reject."""
    from sat_tf.models import captioner

    model, annotations, tokens = _setup(reinforce_signal="reward_to_go")
    exact = _flat(_exact_gradient(model, annotations, tokens))
    unbiased = _estimates(model, annotations, tokens)
    z2, _ = _mean_z2(unbiased, exact)
    assert z2 < 1.5
    monkeypatch.setattr(captioner, "reward_to_go",
                        lambda v: tf.cumsum(v, axis=1, reverse=True, exclusive=True))
    mutant = _estimates(model, annotations, tokens)
    z2_mutant, _ = _mean_z2(mutant, exact)
    relative = np.linalg.norm(mutant.mean(0) - exact) / np.linalg.norm(exact)
    assert z2_mutant > 3.0 or relative > 0.05, f"mean z^2 {z2_mutant:.2f}, relative error {relative:.3f}"
    print(f"reward-to-go without the current word: mean z^2 {z2_mutant:.1f}, relative error {relative:.3f}")


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
