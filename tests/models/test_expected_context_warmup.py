"""The expected-context warm-up of hard attention (`ModelConfig.expected_context_warmup_steps`): the probability of
a minibatch using the expected context falls linearly from 1 at step 0 to `expected_context_prob`, and the coin
of `train_step` follows it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf.config import ModelConfig
from sat_tf.models.captioner import Captioner

V, D, L = 30, 8, 5
TOKENS = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0], [1, 3, 4, 5, 6, 2], [1, 10, 2, 0, 0, 0]], "int32")
ANNOTATIONS = np.random.RandomState(0).randn(4, L, D).astype("float32")


def _model(warmup, prob=0.5):
    model = Captioner(vocab_size=V, feature_dim=D, embedding_dim=16, units=32, attention_dim=16, attention="hard",
                      dropout=0.0, alpha_regularization=0.0, seed=1, expected_context_prob=prob,
                      expected_context_warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("step, expected", [(0, 1.0), (25, 0.8), (50, 0.6), (100, 0.2), (101, 0.2), (1000, 0.2)])
def test_probability_falls_linearly_from_one_to_the_final_value(step, expected):
    model = _model(100, prob=0.2)
    model.optimizer.iterations.assign(step)
    np.testing.assert_allclose(float(model.expected_context_probability()), expected, rtol=1e-6)


def test_no_warmup_keeps_the_paper_constant():
    model = _model(0, prob=0.3)
    for step in (0, 10, 10_000):
        model.optimizer.iterations.assign(step)
        np.testing.assert_allclose(float(model.expected_context_probability()), 0.3, rtol=1e-6)


def test_train_step_samples_no_location_during_the_first_steps_and_half_of_them_after():
    model = _model(40, prob=0.5)
    data = tf.data.Dataset.from_tensors({"annotations": ANNOTATIONS, "tokens": TOKENS}).repeat(120)
    updates = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            updates.append(float(model.baseline_updates.numpy()))

    model.fit(data, epochs=1, verbose=0, callbacks=[Record()])
    sampled = np.diff([0.0] + updates)  # 1 where the step drew locations (REINFORCE on)
    early, late = sampled[:4], sampled[60:]
    assert early.sum() == 0  # p >= 0.9 and the coin of these seeds: every minibatch took the expected context
    assert 0.3 < late.mean() < 0.7  # p = 0.5 after the warm-up
    assert sampled[:40].mean() < late.mean()


def test_config_round_trip_and_validation():
    model = _model(7)
    assert Captioner.from_config(model.get_config()).model_config.expected_context_warmup_steps == 7
    with pytest.raises(ValueError, match="expected_context_warmup_steps"):
        ModelConfig(expected_context_warmup_steps=-1)
