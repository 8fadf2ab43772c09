"""CaptionEnsemble: the averaged next-word distribution, beam search over it with one state per member, and the
checks that members can be combined."""

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.decoding.ensemble import CaptionEnsemble
from sat_tf.models.captioner import Captioner

V, D, L, B, K, S = 30, 8, 5, 3, 3, 7
D2, L2 = 6, 9  # a second encoder's annotations


def _model(seed, attention="soft", **kw):
    args = dict(vocab_size=V, feature_dim=D, embedding_dim=16, units=32, attention_dim=16, attention=attention,
                dropout=0.0, seed=seed)
    args.update(kw)
    model = Captioner(**args)
    # Random initial weights give nearly uniform next-word distributions; sharpen the output layer so that the
    # members disagree clearly and the search has real choices to make.
    for v in model.trainable_variables:
        if "output_projection" in v.path:
            v.assign(v * 8.0)
    return model


def _annotations(seed=0):
    return np.random.RandomState(seed).randn(B, L, D).astype("float32")


def _first_step(model, annotations):
    state, step_fn = model.decode_step_fn(annotations, beam_size=1)
    log_probs, _, records = step_fn(tf.fill([B], 1), state, tf.constant(0))
    return log_probs.numpy(), records["alpha"].numpy()  # (B, V), (B, L)


def test_one_member_decodes_exactly_like_the_member():
    model = _model(1)
    annotations = _annotations()
    want = model.generate(annotations, beam_size=K, max_length=S)
    got = CaptionEnsemble([model]).generate(annotations, beam_size=K, max_length=S)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["alpha"], want["alpha"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("combine", ["probability", "log_probability"])
def test_a_step_combines_the_members_distributions(combine):
    members = [_model(1), _model(2), _model(3, attention="hard")]
    annotations = _annotations()
    per_member = [_first_step(m, annotations) for m in members]
    log_probs = np.stack([lp for lp, _ in per_member]).astype("float64")  # (M, B, V)
    got, alpha = _first_step(CaptionEnsemble(members, combine=combine), annotations)
    allowed = log_probs[0] > -1e8  # <pad> and <start> are never emitted (-1e9 in every member)
    if combine == "probability":
        top = log_probs.max(axis=0)
        want = top + np.log(np.exp(log_probs - top).mean(axis=0))
    else:
        mean = log_probs.mean(axis=0)
        want = mean - np.log(np.exp(mean).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(got[allowed], want[allowed], rtol=1e-5, atol=1e-5)
    assert np.all(got[~allowed] < -1e8)
    np.testing.assert_allclose(np.exp(got).sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(alpha, np.mean([a for _, a in per_member], axis=0), rtol=1e-6, atol=1e-6)
    # the members disagree, so the ensemble is none of them
    assert all(np.abs(got - lp).max() > 1e-3 for lp in log_probs)


def test_beam_scores_are_the_ensemble_probability_of_the_caption_it_returns():
    """Each member's state follows its own beams through the search: re-scoring the returned captions by feeding
    their tokens step by step (no search) gives back the reported log-probabilities."""
    ensemble = CaptionEnsemble([_model(1), _model(2, attention="hard")])
    annotations = _annotations(seed=4)
    out = ensemble.generate(annotations, beam_size=K, max_length=S, return_all_beams=True)
    tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()  # (B, K, S), (B, K)
    assert "location" not in out and out["alpha"].shape == (B, K, S, L)
    rows = np.repeat(annotations, K, axis=0)  # (B*K, L, D)
    state, step_fn = ensemble.decode_step_fn(rows, beam_size=1)
    token = tf.fill([B * K], 1)
    total = np.zeros(B * K)
    flat_tokens, flat_lengths = tokens.reshape(B * K, S), lengths.reshape(-1)
    for t in range(S):
        log_probs, state, _ = step_fn(token, state, tf.constant(t))
        chosen = log_probs.numpy()[np.arange(B * K), flat_tokens[:, t]]
        total += np.where(t < flat_lengths, chosen, 0.0)
        token = tf.constant(flat_tokens[:, t])
    np.testing.assert_allclose(total.reshape(B, K), out["log_probs"], rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 1e-6)  # best first


def test_members_must_share_vocabulary_and_features():
    with pytest.raises(ValueError, match="member b has model.vocab_size=31"):
        CaptionEnsemble([_model(1), _model(2, vocab_size=V + 1)], names=["a", "b"])
    with pytest.raises(ValueError, match="model.feature_dim=9 but reads input 0"):
        CaptionEnsemble([_model(1), _model(2, feature_dim=D + 1)])
    with pytest.raises(ValueError, match="model.feature_dim=9 but reads input 1"):
        CaptionEnsemble([_model(1), _model(2, feature_dim=D2), _model(3, feature_dim=D + 1)], inputs=[0, 1, 1])
    with pytest.raises(ValueError, match="each used"):
        CaptionEnsemble([_model(1), _model(2)], inputs=[0, 2])
    with pytest.raises(ValueError, match="reads 2 inputs"):
        CaptionEnsemble([_model(1), _model(2, feature_dim=D2)], inputs=[0, 1]).generate(_annotations())
    with pytest.raises(ValueError, match="combine must be one of"):
        CaptionEnsemble([_model(1)], combine="vote")
    with pytest.raises(ValueError, match="at least one"):
        CaptionEnsemble([])


def test_describe_names_the_members_and_how_they_decode():
    hard = _model(2, attention="hard", hard_inference="argmax")
    info = CaptionEnsemble([_model(1), hard], names=["s", "h"], combine="log_probability").describe()
    assert info == {"combine": "log_probability", "members": [
        {"name": "s", "attention": "soft"}, {"name": "h", "attention": "hard", "hard_inference": "argmax"}]}
    two = CaptionEnsemble([_model(1), _model(2, feature_dim=D2)], names=["a", "b"], inputs=[0, 1]).describe()
    assert [m["input"] for m in two["members"]] == [0, 1]


def test_members_may_read_the_annotations_of_different_encoders():
    """inputs=[0, 1, 0]: members 0 and 2 read (B, L, D) annotations, member 1 (B, L2, D2) ones of the same
    images; the combined step is the members' own steps on their own inputs, and beam scores re-score."""
    members = [_model(1), _model(2, feature_dim=D2, attention="hard"), _model(3)]
    ensemble = CaptionEnsemble(members, inputs=[0, 1, 0])
    assert ensemble.input_feature_dims == [D, D2]
    first = _annotations()
    second = np.random.RandomState(9).randn(B, L2, D2).astype("float32")
    per_member = [_first_step(m, a) for m, a in zip(members, (first, second, first))]
    state, step_fn = ensemble.decode_step_fn((first, second), beam_size=1)
    got, _, records = step_fn(tf.fill([B], 1), state, tf.constant(0))
    log_probs = np.stack([lp for lp, _ in per_member]).astype("float64")
    top = log_probs.max(axis=0)
    allowed = log_probs[0] > -1e8
    want = top + np.log(np.exp(log_probs - top).mean(axis=0))
    np.testing.assert_allclose(got.numpy()[allowed], want[allowed], rtol=1e-5, atol=1e-5)
    # the attention record averages the maps over input 0's grid only
    np.testing.assert_allclose(records["alpha"], (per_member[0][1] + per_member[2][1]) / 2, rtol=1e-6, atol=1e-6)

    out = ensemble.generate((first, second), beam_size=K, max_length=S)
    assert out["tokens"].shape == (B, S) and out["alpha"].shape == (B, S, L)
    state, step_fn = ensemble.decode_step_fn((first, second), beam_size=1)
    token, total = tf.fill([B], 1), np.zeros(B)
    tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()
    for t in range(S):
        step_log_probs, state, _ = step_fn(token, state, tf.constant(t))
        total += np.where(t < lengths, step_log_probs.numpy()[np.arange(B), tokens[:, t]], 0.0)
        token = tf.constant(tokens[:, t])
    np.testing.assert_allclose(total, out["log_probs"], rtol=1e-4, atol=1e-4)


def test_inputs_from_several_feature_directories_must_list_the_same_images():
    from sat_tf.evaluation.scoring import _check_same_images

    ids = {"image_id": tf.constant([b"a", b"b"])}
    _check_same_images((ids, {"image_id": tf.constant([b"a", b"b"])}), ["x", "y"], "val")
    with pytest.raises(ValueError, match="y holds other val images, or the same in another order, than x"):
        _check_same_images((ids, {"image_id": tf.constant([b"b", b"a"])}), ["x", "y"], "val")
    with pytest.raises(ValueError, match="y has fewer val images"):
        _check_same_images((ids, None), ["x", "y"], "val")
