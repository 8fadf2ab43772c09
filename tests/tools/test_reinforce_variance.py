"""The REINFORCE-variance diagnostic: real gradient statistics, and the baseline reduces the variance."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf.models.captioner import Captioner
from tools.reinforce_variance import measure

V, L, D = 40, 6, 8


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    tokens = np.concatenate([np.ones((8, 1)), rng.randint(4, V, (8, 9)), np.full((8, 1), 2)], 1).astype("int32")
    return {"annotations": rng.randn(8, L, D).astype("float32"), "tokens": tokens}


def test_the_baseline_cuts_the_variance_and_the_expected_context_has_no_sampling_noise():
    # Unseeded initializers draw from Keras' global generator: seeded here so the weights, and so the variances
    # compared below, do not depend on the tests that ran before.
    keras.utils.set_random_seed(3)
    model = Captioner(vocab_size=V, feature_dim=D, embedding_dim=16, units=16, attention_dim=16, dropout=0.0,
                      attention="hard", seed=3)
    batch = _batch()
    out = model.teacher_forcing(batch["annotations"], batch["tokens"], training=False)
    log_p = -tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"])
    model.baseline.assign(float(tf.reduce_mean(tf.reduce_sum(log_p, 1))))  # a well-tracked baseline (~ -37)
    model.baseline_updates.assign(10.0)
    report = measure(model, [batch], draws=8)
    stats = {s.name: s for s in report.estimators}
    assert set(stats) == {"caption, moving average", "caption, no baseline", "caption, expected context",
                          "reward-to-go, moving average", "reward-to-go, expected context",
                          "expected context (backprop)"}
    assert stats["caption, no baseline"].variance > 5 * stats["caption, moving average"].variance
    # every sampling estimator is measured for real: a positive variance of one draw (whether the expected-context
    # reference or reward-to-go lowers it depends on the weights: 0-30% over initial weights here, none on a
    # trained Flickr8k model, docs/results.md), and with a baseline far below the no-baseline estimator's
    sampling = [name for name in stats if name != "expected context (backprop)"]
    assert all(stats[name].variance > 0 and np.isfinite(stats[name].snr) for name in sampling)
    for name in sampling:
        if name != "caption, no baseline":
            assert stats["caption, no baseline"].variance > 2 * stats[name].variance, name
    # without dropout the expected context is deterministic: zero variance, infinite SNR
    backprop = stats["expected context (backprop)"]
    assert backprop.variance < 1e-8 * backprop.mean_norm ** 2
    assert 0 < report.reinforce_share and 0 < report.entropy <= report.max_entropy + 1e-6
    assert report.max_entropy == pytest.approx(math.log(L))
    assert model.baseline_updates.numpy() == 10.0  # restored
    assert model.model_config.reinforce_signal == "caption"  # restored
    assert "| caption, no baseline |" in report.format_table()


def test_refuses_soft_attention():
    with pytest.raises(ValueError, match="hard-attention model"):
        measure(Captioner(vocab_size=V, feature_dim=D, embedding_dim=8, units=8, attention_dim=8), [_batch()])
