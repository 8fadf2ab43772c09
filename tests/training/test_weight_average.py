"""The weight average (TrainConfig.weight_average_decay): the optimizer's running average and the swap used to
score and keep the best model. A trained work dir with it (best/ holds the average, epoch checkpoints the raw
weights, a killed run resumes both) is tested in tests/test_train.py, a mirrored one in test_distributed.py."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from sat_tf import config as cfg
from sat_tf.training import trainer
from sat_tf.training.weight_average import averaged_weights, optimizer_options

V, D, L = 30, 8, 5


def _batch(seed):
    rng = np.random.RandomState(seed)
    tokens = np.zeros((6, 7), "int32")
    tokens[:, 0] = 1
    tokens[:, 1:5] = rng.randint(4, V, (6, 4))
    tokens[:, 5] = 2
    return {"annotations": tf.constant(rng.randn(6, L, D).astype("float32")), "tokens": tf.constant(tokens)}


def _model(decay):
    model_config = cfg.ModelConfig(vocab_size=V, feature_dim=D, embedding_dim=8, units=16, attention_dim=8,
                                   dropout=0.0)
    train_config = cfg.TrainConfig(learning_rate=0.05, weight_average_decay=decay, seed=3)
    return trainer.build_model(model_config, train_config)


def test_options_and_config_checks():
    assert optimizer_options(cfg.TrainConfig()) == {}
    assert optimizer_options(cfg.TrainConfig(weight_average_decay=0.99)) == {"use_ema": True, "ema_momentum": 0.99}
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="weight_average_decay must be in"):
            cfg.TrainConfig(weight_average_decay=bad)


def test_the_average_follows_its_recursion_and_the_swap_restores_the_raw_weights_exactly():
    d = 0.7
    model = _model(d)
    average = None
    for step in range(4):
        model.train_step(_batch(step))
        raw = [v.numpy().copy() for v in model.trainable_variables]
        # Keras starts the average at the weights after the first step
        average = raw if average is None else [d * a + (1 - d) * w for a, w in zip(average, raw)]
    with averaged_weights(model) as swapped:
        assert swapped
        inside = [v.numpy().copy() for v in model.trainable_variables]
    for got, want in zip(inside, average):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert any(np.abs(a - w).max() > 1e-3 for a, w in zip(inside, raw))  # the average is not the last step
    for v, w in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(v.numpy(), w)
    # the raw weights come back even when the block fails
    with pytest.raises(RuntimeError, match="inside"):
        with averaged_weights(model):
            raise RuntimeError("inside")
    for v, w in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(v.numpy(), w)


def test_without_an_average_nothing_is_swapped():
    model = _model(0.0)
    model.train_step(_batch(0))
    raw = [v.numpy().copy() for v in model.trainable_variables]
    with averaged_weights(model) as swapped:
        assert not swapped
        for v, w in zip(model.trainable_variables, raw):
            np.testing.assert_array_equal(v.numpy(), w)
