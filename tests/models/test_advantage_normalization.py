"""NVIL variance normalisation of the REINFORCE learning signal (`ModelConfig.advantage_normalization`).

The learning signal R_b - b is divided by c = max(1, sqrt(v)), v the moving average of mean_b (R_b - b)^2 from
before this minibatch; v is updated (same decay as the baseline) only on minibatches that sampled locations.
"""

import keras
import numpy as np
import tensorflow as tf

from sat_tf.models.captioner import Captioner

V, D, L = 30, 8, 5
TOKENS = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0], [1, 3, 4, 5, 6, 2], [1, 10, 2, 0, 0, 0]], "int32")
ANNOTATIONS = np.random.RandomState(0).randn(4, L, D).astype("float32")


def _model(normalize, **kw):
    return Captioner(vocab_size=V, feature_dim=D, embedding_dim=16, units=32, attention_dim=16, attention="hard",
                     dropout=0.0, alpha_regularization=0.0, entropy_weight=0.0, seed=1,
                     advantage_normalization=normalize, **kw)


def _forward(model, seed=(5, 6)):
    return model.teacher_forcing(ANNOTATIONS, TOKENS, training=True, seed=tf.constant(seed),
                                 use_expected=tf.constant(False))


def _hand_terms(out, baseline):
    mask = out["mask"].numpy()
    log_p_y = -(tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"]).numpy() * mask).sum(1)
    log_p_s = (out["log_prob"].numpy() * mask).sum(1)
    return log_p_y, log_p_s, mask.sum(), log_p_y - baseline


def test_reinforce_term_is_divided_by_the_running_std_from_before_this_batch():
    model = _model(True)
    model.baseline.assign(-20.0)
    model.baseline_updates.assign(3.0)
    model.advantage_variance.assign(36.0)  # c = 6
    out = _forward(model)
    terms = model.loss_terms(out, sampled=True)
    log_p_y, log_p_s, n, advantage = _hand_terms(out, -20.0)
    np.testing.assert_allclose(terms["reinforce"], -np.sum(advantage / 6.0 * log_p_s) / n, rtol=1e-5)
    np.testing.assert_allclose(terms["advantage_variance"], 0.9 * 36.0 + 0.1 * np.mean(advantage ** 2), rtol=1e-5)
    # A small variance never scales the signal up: c = max(1, sqrt(v)).
    model.advantage_variance.assign(0.25)
    small = model.loss_terms(out, sampled=True)
    np.testing.assert_allclose(small["reinforce"], -np.sum(advantage * log_p_s) / n, rtol=1e-5)


def test_first_sampled_batch_starts_the_variance_at_its_own_mean_square():
    model = _model(True)
    out = _forward(model)
    terms = model.loss_terms(out, sampled=True)
    log_p_y, log_p_s, n, _ = _hand_terms(out, 0.0)
    advantage = log_p_y - log_p_y.mean()  # the first batch's baseline is its own mean
    v = np.mean(advantage ** 2)
    assert v > 1.0  # so the check below is a real division
    np.testing.assert_allclose(terms["advantage_variance"], v, rtol=1e-5)
    np.testing.assert_allclose(terms["reinforce"], -np.sum(advantage / np.sqrt(v) * log_p_s) / n, rtol=1e-4)


def test_the_normalised_gradient_is_the_plain_one_scaled_by_one_over_c():
    plain, normalized = _model(False, name="captioner"), _model(True, name="captioner")
    by_path = {w.path: w for w in plain.weights}
    for w in normalized.weights:
        if w is not normalized.advantage_variance:
            w.assign(by_path[w.path])
    normalized.advantage_variance.assign(16.0)  # c = 4
    for m in (plain, normalized):
        m.baseline.assign(-15.0)
        m.baseline_updates.assign(2.0)
    grads = []
    for m in (plain, normalized):
        with tf.GradientTape() as tape:
            reinforce = m.loss_terms(_forward(m), sampled=True)["reinforce"]
        grads.append(tape.gradient(reinforce, m.cell.attention.trainable_weights))
    for g_plain, g_norm in zip(*grads):
        assert float(tf.reduce_max(tf.abs(g_plain))) > 0.0
        np.testing.assert_allclose(g_norm, np.asarray(g_plain) / 4.0, rtol=1e-4, atol=1e-7)


def test_fit_updates_v_only_on_sampled_minibatches():
    model = _model(True, expected_context_prob=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    ds = tf.data.Dataset.from_tensors({"annotations": ANNOTATIONS, "tokens": TOKENS}).repeat(60)
    values = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            values.append((float(self.model.baseline_updates.numpy()), float(self.model.advantage_variance.numpy())))

    history = model.fit(ds, epochs=1, verbose=0, callbacks=[Record()]).history
    assert "advantage_variance" in history
    updates = [u for u, _ in values]
    assert 10 < updates[-1] < 50  # about half of the 60 minibatches sampled
    for (u0, v0), (u1, v1) in zip(values, values[1:]):
        if u1 == u0:  # an expected-context minibatch leaves v alone
            assert v1 == v0
    assert len({v for _, v in values}) > 5


def test_the_flag_serializes_and_only_normalising_models_carry_v():
    model = _model(True)
    model.advantage_variance.assign(12.5)
    clone = Captioner.from_config(model.get_config())
    assert clone.model_config.advantage_normalization is True
    assert clone.advantage_variance is not None
    # Models without the option (and checkpoints written before it existed) have exactly the old weights.
    assert _model(False).advantage_variance is None
    assert len(_model(True).weights) == len(_model(False).weights) + 1
    soft = Captioner(vocab_size=V, feature_dim=D, units=8, attention="soft", advantage_normalization=True)
    assert soft.advantage_variance is None
