import numpy as np
import tensorflow as tf

from sat_tf.layers import SoftAttention
from tests.test_case import run_layer_test

B, L, D, H, A = 3, 6, 5, 7, 4


def _inputs(seed=0):
    rng = np.random.RandomState(seed)
    return {"annotations": rng.randn(B, L, D).astype("float32"), "hidden": rng.randn(B, H).astype("float32")}


def test_layer_contract(tmp_path):
    # W_a kernel+bias, W_h kernel, w kernel.
    run_layer_test(SoftAttention, {"units": A}, _inputs(), ((B, D), (B, L)), expected_num_trainable_weights=4,
                   tmp_dir=str(tmp_path))


def test_alpha_is_a_distribution_and_context_its_expectation():
    layer = SoftAttention(A)
    x = _inputs(1)
    context, alpha = layer(**x)
    np.testing.assert_allclose(tf.reduce_sum(alpha, -1), np.ones(B), atol=1e-6)
    assert np.all(alpha.numpy() > 0)
    expected = np.einsum("bl,bld->bd", alpha.numpy(), x["annotations"])
    np.testing.assert_allclose(context, expected, rtol=1e-5, atol=1e-6)


def test_matches_the_paper_formula():
    layer = SoftAttention(A)
    x = _inputs(2)
    _, alpha = layer(**x)
    wa, ba = (w.numpy() for w in layer.annotation_projection.weights)
    wh = layer.hidden_projection.kernel.numpy()
    w = layer.score.kernel.numpy()[:, 0]
    e = np.tanh(x["annotations"] @ wa + ba + (x["hidden"] @ wh)[:, None, :]) @ w  # (B, L)
    want = np.exp(e - e.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(alpha, want, rtol=1e-5, atol=1e-6)


def test_precomputed_projection_gives_the_same_result():
    layer = SoftAttention(A)
    x = _inputs(3)
    projected = layer.project_annotations(x["annotations"])
    for a, b in zip(layer(**x), layer(**x, projected=projected)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
