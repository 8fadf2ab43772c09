"""The replica helpers of `sat_tf.models.distributed_fit` in one process (one replica: identities, except the dense
embedding gradient) and the Keras versions its override is applied on; tests/training/test_distributed.py checks
`fit` under MirroredStrategy and two workers (and fails without the override)."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf.models import distributed_fit


def test_one_replica_counts_are_the_batch_own():
    offset, captions, tokens = distributed_fit.global_counts(tf.constant(5), tf.constant(17.0))
    assert (int(offset), float(captions), float(tokens)) == (0, 5.0, 17.0)
    assert distributed_fit.num_replicas() == 1
    assert float(distributed_fit.global_sum(tf.constant(3.0))) == 3.0
    logs = {"loss": tf.constant(1.5)}
    assert distributed_fit.fit_logs(logs) is logs  # scalars outside a multi-worker job


def test_sparse_gradients_become_dense_so_that_the_global_norm_counts_repeated_rows():
    """A word twice in a batch: the embedding gradient has two slices of row 1. Its norm is that of their sum
    (sqrt(2 * 2^2) = 2.83 over 2 columns), which Keras' global norm of the slices (sqrt(4 * 1) = 2) misses."""
    grad = tf.IndexedSlices(tf.ones([2, 2]), tf.constant([1, 1]), tf.constant([4, 2]))
    dense = tf.zeros([3])
    clipped = keras.optimizers.Adam(global_clipnorm=1.0)
    out = distributed_fit.global_gradients([grad, dense, None], clipped)
    assert isinstance(out[0], tf.Tensor) and out[2] is None
    np.testing.assert_array_equal(out[0].numpy(), [[0, 0], [2, 2], [0, 0], [0, 0]])
    assert isinstance(distributed_fit.global_gradients([grad], keras.optimizers.Adam())[0], tf.IndexedSlices)


def _fit_one_step():
    from sat_tf.models.captioner import Captioner

    model = Captioner(vocab_size=20, feature_dim=4, embedding_dim=4, units=8, attention_dim=4, dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(global_clipnorm=1.0))
    tokens = np.array([[1, 5, 6, 2, 0]] * 4, "int32")
    data = tf.data.Dataset.from_tensors({"annotations": np.ones((4, 3, 4), "float32"), "tokens": tokens})
    history = model.fit(data, epochs=1, verbose=0)
    assert model.optimizer.built and int(model.optimizer.iterations) == 1
    assert np.isfinite(history.history["loss"][0])
    return model


def test_the_overridden_keras_method_is_the_one_of_the_installed_keras():
    """`SymbolicBuildFree` overrides Keras' private `_maybe_symbolic_build` (keras#20585). It was checked on the
    versions of `VERIFIED_KERAS` (tests/training/test_distributed.py fails without it there); another Keras must be
    checked again before the range is widened, and the method must still be there with the same arguments."""
    assert distributed_fit.keras_verified(), (keras.version(), distributed_fit.VERIFIED_KERAS)
    own = inspect.signature(keras.Model._maybe_symbolic_build)
    assert list(own.parameters) == list(inspect.signature(distributed_fit.SymbolicBuildFree._maybe_symbolic_build)
                                        .parameters) == ["self", "iterator", "data_batch"]
    _fit_one_step()


def test_outside_the_verified_keras_versions_keras_own_build_runs_with_a_warning(monkeypatch):
    monkeypatch.setattr(keras, "version", lambda: "3.16.0.dev2026")
    assert distributed_fit.keras_version() == (3, 16, 0) and not distributed_fit.keras_verified()
    calls = []
    own = keras.Model._maybe_symbolic_build
    monkeypatch.setattr(keras.Model, "_maybe_symbolic_build", lambda self, **kw: calls.append(kw) or own(self, **kw))
    with pytest.warns(UserWarning, match=r"keras#20585.*checked on Keras 3\.15\.1 to 3\.15\.1 only"):
        _fit_one_step()  # one device: Keras' own build does nothing, the train step builds the optimizer
    assert len(calls) == 1
