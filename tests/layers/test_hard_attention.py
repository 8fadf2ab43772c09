import numpy as np
import pytest
import tensorflow as tf

from sat_tf.layers import HardAttention
from tests.test_case import run_layer_test

B, L, D, H, A = 3, 6, 5, 7, 4


def _inputs(seed=0, batch=B):
    rng = np.random.RandomState(seed)
    return {"annotations": rng.randn(batch, L, D).astype("float32"),
            "hidden": rng.randn(batch, H).astype("float32")}


def _shapes():
    return {"context": (B, D), "alpha": (B, L), "location": (B,), "log_prob": (B,), "entropy": (B,), "expected": ()}


def test_layer_contract(tmp_path):
    # Sampled contexts carry no gradient to f_att; log_prob and entropy do (REINFORCE), so every weight gets one.
    run_layer_test(HardAttention, {"units": A, "seed": 3}, _inputs(), _shapes(), expected_num_trainable_weights=4,
                   tmp_dir=str(tmp_path), grad_kwargs={"training": True})


def test_samples_follow_alpha_and_pick_annotation_vectors():
    layer = HardAttention(A, expected_context_prob=0.0)
    x = _inputs(1, batch=1)
    x = {k: np.repeat(v, 20000, axis=0) for k, v in x.items()}
    out = layer(**x, training=True, seed=tf.constant([1, 2]))
    alpha = out["alpha"].numpy()[0]
    freq = np.bincount(out["location"].numpy(), minlength=L) / 20000
    # 5 standard errors of a binomial proportion.
    np.testing.assert_array_less(np.abs(freq - alpha), 5 * np.sqrt(alpha * (1 - alpha) / 20000) + 1e-3)
    chosen = x["annotations"][np.arange(20000), out["location"].numpy()]
    np.testing.assert_array_equal(out["context"].numpy(), chosen)
    np.testing.assert_allclose(out["log_prob"], np.log(alpha)[out["location"].numpy()], rtol=1e-5)
    np.testing.assert_allclose(out["entropy"][0], -(alpha * np.log(alpha)).sum(), rtol=1e-5)


def test_expected_context_coin_is_drawn_once_per_minibatch_with_its_probability():
    layer = HardAttention(A, expected_context_prob=0.5)
    x = _inputs(2)
    coins = [bool(layer(**x, training=True, seed=tf.constant([7, i]))["expected"]) for i in range(400)]
    assert 0.4 < np.mean(coins) < 0.6
    out = layer(**x, training=True, seed=tf.constant([7, coins.index(True)]))
    soft_context, _ = super(HardAttention, layer).call(x["annotations"], x["hidden"])
    np.testing.assert_allclose(out["context"], soft_context, rtol=1e-6)


@pytest.mark.parametrize("mode", ["expected", "argmax"])
def test_inference_is_deterministic(mode):
    layer = HardAttention(A, inference=mode)
    x = _inputs(3)
    first, second = layer(**x), layer(**x)
    np.testing.assert_array_equal(first["context"], second["context"])
    if mode == "expected":  # the soft context: sum_l alpha_l a_l
        want = np.einsum("bl,bld->bd", first["alpha"].numpy(), x["annotations"])
        np.testing.assert_allclose(first["context"], want, rtol=1e-5, atol=1e-6)
    if mode == "argmax":
        np.testing.assert_array_equal(first["location"], np.argmax(first["alpha"], -1))
        np.testing.assert_array_equal(first["context"], x["annotations"][np.arange(B), first["location"].numpy()])


def test_same_seed_same_samples_another_seed_other_samples():
    layer = HardAttention(A, expected_context_prob=0.0)
    x = _inputs(4, batch=64)
    a = layer(**x, training=True, seed=tf.constant([5, 6]))["location"]
    b = layer(**x, training=True, seed=tf.constant([5, 6]))["location"]
    np.testing.assert_array_equal(a, b)
    c = layer(**x, training=True, seed=tf.constant([5, 7]))["location"]
    assert np.mean(a.numpy() != c.numpy()) > 0.2  # 64 draws over 6 locations: a seed that is ignored fails here


def test_unknown_inference_mode_is_refused():
    with pytest.raises(ValueError, match="inference"):
        HardAttention(A, inference="greedy")


def test_log_prob_and_entropy_stay_float32_under_mixed_precision():
    """REINFORCE's score log p(s_t) and the entropy bonus come from float32 logits even where the layer computes in
    bfloat16, and the Captioner's teacher forcing keeps them float32 (unrolled and while-loop paths)."""
    import keras

    from sat_tf.models.captioner import Captioner

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = HardAttention(A, expected_context_prob=0.0)
        x = _inputs(5)
        out = layer(**x, training=True, seed=tf.constant([1, 2]))
        assert out["log_prob"].dtype == tf.float32 and out["entropy"].dtype == tf.float32
        alpha = tf.nn.softmax(tf.cast(layer.attend(x["annotations"], layer.project_annotations(x["annotations"]),
                                                   layer.hidden_projection(x["hidden"]))[2], tf.float32)).numpy()
        np.testing.assert_allclose(out["entropy"], -(alpha * np.log(alpha)).sum(-1), rtol=1e-6)
        tokens = np.array([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]], "int32")
        annotations = np.random.RandomState(0).randn(2, L, D).astype("float32")
        for unroll in (32, 0):
            model = Captioner(vocab_size=10, feature_dim=D, embedding_dim=8, units=8, attention_dim=A,
                              attention="hard", seed=0, unroll_steps=unroll)
            fwd = model.teacher_forcing(annotations, tokens, training=True, seed=tf.constant([3, 4]),
                                        use_expected=tf.constant(False))
            assert fwd["log_prob"].dtype == tf.float32 and fwd["entropy"].dtype == tf.float32
            assert model.cell.compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
