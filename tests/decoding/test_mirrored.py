"""Test-time mirroring: a captioner (or an ensemble) decoding the photo and its mirror image as one model."""

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.decoding.ensemble import CaptionEnsemble
from sat_tf.decoding.mirrored import mirrored_inputs, with_mirrored_views
from tests.decoding.test_ensemble import B, D, D2, K, L, L2, S, _annotations, _first_step, _model


def test_identical_views_decode_exactly_like_the_model():
    model = _model(1)
    photo = _annotations()
    want = model.generate(photo, beam_size=K, max_length=S)
    got = with_mirrored_views(model).generate(mirrored_inputs(photo, photo), beam_size=K, max_length=S)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-5, atol=1e-5)


def test_a_step_averages_the_two_views_and_records_the_photos_attention():
    model = _model(1, attention="hard")
    photo, mirror = _annotations(0), _annotations(5)
    (p_log, p_alpha), (m_log, _) = _first_step(model, photo), _first_step(model, mirror)
    wrapped = with_mirrored_views(model)
    state, step_fn = wrapped.decode_step_fn(mirrored_inputs(photo, mirror), beam_size=1)
    got, _, records = step_fn(tf.fill([B], 1), state, tf.constant(0))
    allowed = p_log > -1e8
    stacked = np.stack([p_log, m_log]).astype("float64")
    top = stacked.max(axis=0)
    want = top + np.log(np.exp(stacked - top).mean(axis=0))
    np.testing.assert_allclose(got.numpy()[allowed], want[allowed], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(records["alpha"], p_alpha, rtol=1e-6, atol=1e-6)  # the photo's map only
    assert np.abs(got.numpy()[allowed] - p_log[allowed]).max() > 1e-3  # the mirror view counted
    out = wrapped.generate(mirrored_inputs(photo, mirror), beam_size=K, max_length=S)
    assert out["tokens"].shape == (B, S) and out["alpha"].shape == (B, S, L)


def test_an_ensemble_over_two_encoders_keeps_its_rule_and_reads_four_inputs():
    members = [_model(1), _model(2, feature_dim=D2)]
    ensemble = CaptionEnsemble(members, combine="log_probability", names=["a", "b"], inputs=[0, 1])
    wrapped = with_mirrored_views(ensemble)
    assert wrapped.combine == "log_probability" and wrapped.inputs == [0, 1, 2, 3]
    assert wrapped.names == ["a", "b", "a (mirrored)", "b (mirrored)"]
    assert wrapped.input_feature_dims == [D, D2, D, D2]
    first, second = _annotations(), np.random.RandomState(9).randn(B, L2, D2).astype("float32")
    want = ensemble.generate((first, second), beam_size=K, max_length=S)
    got = wrapped.generate(mirrored_inputs((first, second), (first, second)), beam_size=K, max_length=S)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2 photo inputs but 1 mirrored"):
        mirrored_inputs((first, second), first)
