"""The expected-context REINFORCE baseline (`ModelConfig.reinforce_baseline="expected_context"`).

The learning signal of caption b becomes R_b - r_b - b, with r_b = log p(y_b | a, expected context at every step)
(no dropout, no gradient) and b the moving average of R_b - r_b. r_b does not depend on the sampled locations, so
the estimate stays unbiased (the exact-enumeration test in test_reinforce.py runs with it too).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf import config as cfg
from sat_tf.models.captioner import Captioner

V, D, L = 30, 8, 5
TOKENS = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0], [1, 3, 4, 5, 6, 2], [1, 10, 2, 0, 0, 0]], "int32")
ANNOTATIONS = np.random.RandomState(0).randn(4, L, D).astype("float32")


def _model(baseline="expected_context", **kw):
    return Captioner(vocab_size=V, feature_dim=D, embedding_dim=16, units=32, attention_dim=16, attention="hard",
                     dropout=0.3, alpha_regularization=0.0, entropy_weight=0.0, seed=1, reinforce_baseline=baseline,
                     **kw)


def _log_p_y(out):
    mask = out["mask"].numpy()
    return -(tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"]).numpy() * mask).sum(1)


def test_the_reference_is_the_expected_context_log_likelihood_without_dropout():
    model = _model()
    reference = model.reinforce_reference(ANNOTATIONS, TOKENS, True).numpy()
    want = _log_p_y(model.teacher_forcing(ANNOTATIONS, TOKENS, training=False, hard_mode="expected"))
    np.testing.assert_allclose(reference, want, rtol=1e-5)
    # deterministic (no dropout), and zero where the minibatch uses the expected context (no REINFORCE term)
    np.testing.assert_array_equal(model.reinforce_reference(ANNOTATIONS, TOKENS, True), reference)
    np.testing.assert_array_equal(model.reinforce_reference(ANNOTATIONS, TOKENS, False), np.zeros(4))
    # an argmax-decoding model still references the expected context
    argmax = _model(hard_inference="argmax")
    argmax.set_weights(model.get_weights())
    np.testing.assert_allclose(argmax.reinforce_reference(ANNOTATIONS, TOKENS, True), reference, rtol=1e-5)
    assert _model("moving_average").reinforce_reference(ANNOTATIONS, TOKENS, True) is None
    soft = Captioner(vocab_size=V, feature_dim=D, units=8, reinforce_baseline="expected_context")
    assert soft.reinforce_reference(ANNOTATIONS, TOKENS, True) is None


def test_the_learning_signal_subtracts_the_reference_and_the_average_of_the_residual():
    model = _model()
    model.baseline.assign(-1.5)
    model.baseline_updates.assign(4.0)
    out = model.teacher_forcing(ANNOTATIONS, TOKENS, training=True, seed=tf.constant([5, 6]),
                                use_expected=tf.constant(False))
    reference = model.reinforce_reference(ANNOTATIONS, TOKENS, True)
    terms = model.loss_terms(out, sampled=True, reference=reference)
    mask = out["mask"].numpy()
    log_p_s = (out["log_prob"].numpy() * mask).sum(1)
    residual = _log_p_y(out) - reference.numpy()
    np.testing.assert_allclose(terms["reinforce"], -np.sum((residual + 1.5) * log_p_s) / mask.sum(), rtol=1e-4)
    np.testing.assert_allclose(terms["baseline"], 0.9 * -1.5 + 0.1 * residual.mean(), rtol=1e-5)
    # the residual is small next to the captions' own log-likelihoods: what the reference is for
    assert np.std(residual) < 0.5 * np.std(_log_p_y(out))


def test_no_gradient_flows_through_the_reference():
    model = _model()
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(model.reinforce_reference(ANNOTATIONS, TOKENS, True))
    assert all(g is None for g in tape.gradient(total, model.trainable_variables))


def test_fit_trains_with_it_and_the_option_serializes():
    model = _model(expected_context_prob=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    ds = tf.data.Dataset.from_tensors({"annotations": ANNOTATIONS, "tokens": TOKENS}).repeat(30)
    history = model.fit(ds, epochs=2, verbose=0).history
    assert history["xent"][-1] < history["xent"][0]
    assert 0 < float(model.baseline_updates.numpy()) < 60
    assert abs(float(model.baseline.numpy())) < 5.0  # an average of residuals, not of whole log-likelihoods
    clone = Captioner.from_config(model.get_config())
    assert clone.model_config.reinforce_baseline == "expected_context"
    with pytest.raises(ValueError, match="reinforce_baseline"):
        cfg.ModelConfig(reinforce_baseline="learned")
