import numpy as np
import pytest
import tensorflow as tf

from sat_tf.layers import AttentionLSTMCell
from tests.test_case import run_layer_test

B, L, D, H, A, E, V = 3, 6, 5, 8, 4, 7, 11


def _kwargs(**overrides):
    kw = dict(units=H, vocab_size=V, embedding_dim=E, feature_dim=D, attention_dim=A)
    kw.update(overrides)
    return kw


def _inputs(seed=0):
    rng = np.random.RandomState(seed)
    return {"inputs": rng.randn(B, E).astype("float32"),
            "states": [rng.randn(B, H).astype("float32"), rng.randn(B, H).astype("float32")],
            "annotations": rng.randn(B, L, D).astype("float32")}


# attention (4) + init_h, init_c (2 each) + W_x, W_z, U (1 each) + gate (2) + L_h (2) + L_z (1) + L_o (2) + lstm bias
NUM_WEIGHTS = {"scalar": 19, "channel": 19, "none": 17}


@pytest.mark.parametrize("gate", ["scalar", "channel", "none"])
@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_layer_contract(tmp_path, attention, gate):
    # init_h / init_c are not used by one step from given states.
    run_layer_test(AttentionLSTMCell, _kwargs(attention=attention, gate=gate, seed=1), _inputs(),
                   ((B, V), [(B, H), (B, H)]), expected_num_trainable_weights=NUM_WEIGHTS[gate],
                   tmp_dir=str(tmp_path),
                   no_grad_weights=("init_h", "init_c"))


def test_step_matches_the_lstm_equations():
    cell = AttentionLSTMCell(**_kwargs())
    x = _inputs(1)
    logits, (h, c) = cell(**x)
    assert cell.output_size == logits.shape[-1] == V
    h0, c0 = x["states"]
    a = x["annotations"]
    context, _ = cell.attention(a, h0)
    beta = 1 / (1 + np.exp(-(h0 @ cell.gate.kernel.numpy() + cell.gate.bias.numpy())))  # (B, 1)
    z = beta * context.numpy()
    gates = (x["inputs"] @ cell.input_projection.kernel.numpy() + z @ cell.context_projection.kernel.numpy()
             + h0 @ cell.recurrent_projection.kernel.numpy() + cell.lstm_bias.numpy())
    i, f, g, o = np.split(gates, 4, axis=-1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c_ref = sig(f) * c0 + sig(i) * np.tanh(g)
    h_ref = sig(o) * np.tanh(c_ref)
    np.testing.assert_allclose(c, c_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h, h_ref, rtol=1e-4, atol=1e-5)
    pre = np.tanh(x["inputs"] + h_ref @ cell.hidden_output.kernel.numpy() + cell.hidden_output.bias.numpy()
                  + z @ cell.context_output.kernel.numpy())
    logits_ref = pre @ cell.output_projection.kernel.numpy() + cell.output_projection.bias.numpy()
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-4, atol=1e-4)


def test_initial_state_from_mean_annotation():
    cell = AttentionLSTMCell(**_kwargs())
    a = _inputs()["annotations"]
    h0, c0 = cell.initial_state(a)
    mean = a.mean(axis=1)
    np.testing.assert_allclose(h0, np.tanh(mean @ cell.init_h.kernel.numpy() + cell.init_h.bias.numpy()),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c0, np.tanh(mean @ cell.init_c.kernel.numpy() + cell.init_c.bias.numpy()),
                               rtol=1e-5, atol=1e-6)


def test_forget_bias_starts_at_one():
    cell = AttentionLSTMCell(**_kwargs())
    cell.build()
    bias = cell.lstm_bias.numpy()
    np.testing.assert_array_equal(bias[H:2 * H], 1.0)
    assert np.count_nonzero(bias) == H


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="gate"):
        AttentionLSTMCell(**_kwargs(gate="vector"))
    with pytest.raises(ValueError, match="attention"):
        AttentionLSTMCell(**_kwargs(attention="local"))


def test_dropout_only_in_training():
    cell = AttentionLSTMCell(**_kwargs(dropout=0.5, seed=0))
    x = _inputs(2)
    a, _ = cell(**x)
    b, _ = cell(**x)
    c, _ = cell(**x, training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert tf.reduce_all(tf.math.is_finite(c))


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_keras_rnn_of_the_cell_equals_the_captioners_teacher_forcing(attention):
    """`keras.layers.RNN(cell)` (through `AttentionRNN`, and directly inside `cell.attending`) gives the logits of
    the Captioner's own teacher forcing on the same weights (hard attention: its deterministic inference mode)."""
    import keras

    from sat_tf.layers import AttentionRNN
    from sat_tf.models.captioner import Captioner

    model = Captioner(vocab_size=V, feature_dim=D, embedding_dim=E, units=H, attention_dim=A, attention=attention,
                      dropout=0.0, seed=2)
    rng = np.random.RandomState(3)
    annotations = rng.randn(B, L, D).astype("float32")
    tokens = np.concatenate([np.ones((B, 1)), rng.randint(4, V, (B, 5)), np.full((B, 1), 2)], 1).astype("int32")
    want = model.teacher_forcing(annotations, tokens)["logits"].numpy()  # (B, T, V)
    embeddings = model.embedding(tokens[:, :-1])  # (B, T, E)
    layer = AttentionRNN(model.cell)
    np.testing.assert_allclose(layer(embeddings, annotations).numpy(), want, rtol=1e-5, atol=1e-5)
    rnn = keras.layers.RNN(model.cell, return_sequences=True)
    with model.cell.attending(annotations):
        got = rnn(embeddings, initial_state=model.cell.initial_state(annotations))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attending"):
        rnn(embeddings, initial_state=model.cell.initial_state(annotations))
    # the wrapper's config round-trips to a layer with the same cell settings
    clone = AttentionRNN.from_config(layer.get_config())
    assert clone.cell.get_config() == model.cell.get_config()
    assert layer.compute_output_shape((B, 6, E)) == (B, 6, V)


def test_attention_rnn_layer_contract(tmp_path):
    from sat_tf.layers import AttentionRNN

    rng = np.random.RandomState(4)
    cell = AttentionLSTMCell(**_kwargs(seed=1))
    run_layer_test(AttentionRNN, {"cell": cell},
                   {"embeddings": rng.randn(B, 4, E).astype("float32"),
                    "annotations": rng.randn(B, L, D).astype("float32")},
                   (B, 4, V), expected_num_trainable_weights=NUM_WEIGHTS["scalar"], tmp_dir=str(tmp_path))
