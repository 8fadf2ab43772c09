"""The shared layer-test helper (after keras-hub's `run_layer_test`): every custom layer test calls it.

It checks output shapes, weight counts, a JSON config round-trip, a `.keras` save/load round-trip with
identical outputs, and one gradient step that reaches every trainable weight.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="sat_tf_tests")
class LayerHarness(keras.Model):
    """Wraps one layer so it can go through `model.save(...)` / `keras.models.load_model(...)`.

    Args:
        layer: the layer under test.
        input_specs: dict name -> (shape, dtype) of the layer's call arguments; the harness builds the layer by
            calling it once on zeros of these shapes, so a reloaded harness has its weights before loading them.
    """

    def __init__(self, layer, input_specs, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.input_specs = {k: (list(v[0]), v[1]) for k, v in input_specs.items()}
        self(_zeros(self.input_specs))

    def call(self, inputs):
        return self.layer(**inputs)

    def get_config(self):
        config = super().get_config()
        config.update({"layer": keras.saving.serialize_keras_object(self.layer), "input_specs": self.input_specs})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


def _zeros(specs):
    return {name: tf.zeros(shape, dtype) for name, (shape, dtype) in specs.items()}


def _flat(outputs):
    return [np.asarray(x) for x in tf.nest.flatten(outputs)]


def run_layer_test(layer_cls, init_kwargs: dict, call_kwargs: dict, expected_output_shapes,
                   expected_num_trainable_weights: int, expected_num_non_trainable_weights: int = 0,
                   tmp_dir: str | None = None, grad_kwargs: dict | None = None, no_grad_weights: tuple = ()):
    """Runs the standard battery on `layer_cls(**init_kwargs)` called with `call_kwargs` (numpy arrays).

    Args:
        expected_output_shapes: nested structure of shape tuples matching the layer's outputs.
        tmp_dir: directory for the `.keras` round-trip (pytest's tmp_path).
        grad_kwargs: extra call kwargs for the gradient step (e.g. {"training": True}).
        no_grad_weights: substrings of weight paths that legitimately get no gradient from the summed outputs.

    Returns:
        The layer, built.
    """
    layer = layer_cls(**init_kwargs)
    inputs = {k: tf.convert_to_tensor(v) for k, v in call_kwargs.items()}
    outputs = layer(**inputs)

    # Shapes.
    got = [tuple(x.shape) for x in tf.nest.flatten(outputs)]
    want = _shape_list(expected_output_shapes)
    assert got == want, f"output shapes {got} != expected {want}"

    # Weight counts.
    assert len(layer.trainable_weights) == expected_num_trainable_weights, (
        f"{len(layer.trainable_weights)} trainable weights: {[w.path for w in layer.trainable_weights]}")
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, (
        f"{len(layer.non_trainable_weights)} non-trainable weights: {[w.path for w in layer.non_trainable_weights]}")

    # JSON config round-trip: same config, same outputs once the weights are copied.
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls
    assert revived.get_config() == layer.get_config()
    revived(**inputs)
    revived.set_weights(layer.get_weights())
    for a, b in zip(_flat(revived(**inputs)), _flat(outputs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    # .keras round-trip.
    if tmp_dir is not None:
        specs = {k: (tuple(v.shape), v.dtype.name) for k, v in inputs.items()}
        harness = LayerHarness(layer, specs)
        path = os.path.join(tmp_dir, f"{layer_cls.__name__}.keras")
        harness.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded.layer) is layer_cls
        for a, b in zip(_flat(loaded(inputs)), _flat(outputs)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    # One gradient step reaches every trainable weight and changes it.
    with tf.GradientTape() as tape:
        out = layer(**inputs, **(grad_kwargs or {}))
        loss = tf.add_n([tf.reduce_sum(tf.cast(x, tf.float32) ** 2) for x in tf.nest.flatten(out)
                         if x.dtype.is_floating])
    weights = layer.trainable_weights
    grads = tape.gradient(loss, weights)
    missing = [w.path for w, g in zip(weights, grads) if g is None and not any(s in w.path for s in no_grad_weights)]
    assert not missing, f"no gradient reaches {missing}"
    before = [np.array(w) for w in weights]
    keras.optimizers.SGD(0.1).apply([g if g is not None else tf.zeros_like(w) for g, w in zip(grads, weights)],
                                    weights)
    unchanged = [w.path for b, w, g in zip(before, weights, grads)
                 if g is not None and np.array_equal(b, np.array(w))]
    assert not unchanged, f"a gradient step left {unchanged} unchanged"
    return layer


def _shape_list(structure):
    """Flattens a nested structure whose leaves are shape tuples."""
    if isinstance(structure, tuple) and all(isinstance(d, (int, type(None))) for d in structure):
        return [structure]
    if isinstance(structure, dict):
        return [s for k in sorted(structure) for s in _shape_list(structure[k])]
    return [s for item in structure for s in _shape_list(item)]
