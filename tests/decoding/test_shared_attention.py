"""Beam search's shared annotations: K rows per image attending one (B, L, D) copy give what K repeated copies give."""

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.decoding.beam_search import beam_search, greedy_search, tile_beams
from sat_tf.layers.hard_attention import HardAttention
from sat_tf.layers.soft_attention import SharedAnnotations, SoftAttention
from sat_tf.models.captioner import Captioner

B, K, L, D, A, H = 3, 4, 5, 8, 6, 7


def _inputs(seed=0):
    rng = np.random.RandomState(seed)
    annotations = tf.constant(rng.randn(B, L, D).astype("float32"))
    hidden = tf.constant(rng.randn(B * K, H).astype("float32"))
    return annotations, hidden


def _layer(kind):
    layer = SoftAttention(A) if kind == "soft" else HardAttention(A, seed=0)
    layer.build((None, L, D), (None, H))
    return layer


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_attend_on_shared_annotations_equals_repeated_annotations(kind):
    layer = _layer(kind)
    annotations, hidden = _inputs()
    projected = layer.project_annotations(annotations)  # (B, L, A)
    projected_hidden = layer.hidden_projection(hidden)  # (N, A)
    shared = layer.attend(SharedAnnotations(annotations), projected, projected_hidden)
    tiled = layer.attend(tile_beams(annotations, K), tile_beams(projected, K), projected_hidden)
    for name, got, want in zip(("context", "alpha", "scores"), shared, tiled):
        assert got.shape == want.shape == ((B * K, D) if name == "context" else (B * K, L))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("mode", ["expected", "argmax", "sample", "given"])
def test_hard_select_on_shared_annotations_equals_repeated_annotations(mode):
    layer = _layer("hard")
    annotations, hidden = _inputs(seed=1)
    projected = layer.project_annotations(annotations)
    projected_hidden = layer.hidden_projection(hidden)
    repeated = tile_beams(annotations, K)
    context, _, scores = layer.attend(repeated, tile_beams(projected, K), projected_hidden)
    location = tf.constant(np.random.RandomState(2).randint(0, L, B * K), tf.int32) if mode == "given" else None
    seed = tf.constant([3, 4])
    shared = layer.select(SharedAnnotations(annotations), context, scores, mode, seed, location=location)
    tiled = layer.select(repeated, context, scores, mode, seed, location=location)
    for name, got, want in zip(("context", "location", "log_prob", "entropy"), shared, tiled):
        np.testing.assert_array_equal(got, want, err_msg=name)
    if mode != "expected":
        # row n attends image n // K: its context is that image's annotation at the chosen location
        location = shared[1].numpy()
        want = annotations.numpy()[np.arange(B * K) // K, location]
        np.testing.assert_array_equal(shared[0], want)


def _tiled_step_fn(model, annotations, beam_size, seed=None):
    """`decode_step_fn` as it was before shared annotations: every tensor repeated K times."""
    cell, cfg = model.cell, model.model_config
    h, c = cell.initial_state(annotations)
    projected = cell.prepare(annotations)
    annotations, projected, h, c = (tile_beams(x, beam_size) for x in (annotations, projected, h, c))
    kernel = cell.recurrent_kernel()
    mode = cfg.hard_inference if model.is_hard else "expected"
    mask = np.zeros(cfg.vocab_size, "float32")
    mask[[cfg.pad_id, cfg.start_id, cfg.unk_id]] = -1e9

    def step_fn(tokens, state, t):
        embedded = model.embedding(tokens)
        step_seed = tf.random.experimental.stateless_fold_in(seed, t) if mode == "sample" else None
        h, c, extras = cell.step(cell.project_inputs(embedded), state, annotations, projected, kernel, mode=mode,
                                 seed=step_seed)
        logits = cell.output_logits(embedded, h, extras["context"], training=False)
        records = {"alpha": extras["alpha"]}
        if model.is_hard:
            records["location"] = extras["location"]
        return tf.nn.log_softmax(logits + mask), [h, c], records

    return [h, c], step_fn


@pytest.mark.parametrize("attention,inference", [("soft", "expected"), ("hard", "argmax"), ("hard", "sample")])
def test_captioner_beam_search_with_shared_annotations_equals_repeated_annotations(attention, inference):
    model = Captioner(vocab_size=30, feature_dim=D, embedding_dim=16, units=32, attention_dim=16,
                      attention=attention, hard_inference=inference, dropout=0.0, seed=1)
    annotations = tf.constant(np.random.RandomState(5).randn(B, L, D).astype("float32"))
    c = model.model_config
    seed = tf.constant([7, 8])
    got = model.decode(annotations, beam_size=K, max_length=6, seed=seed)
    state, step_fn = _tiled_step_fn(model, annotations, K, seed)
    want = beam_search(step_fn, state, B, K, 6, c.start_id, c.end_id, c.pad_id)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # K sampled captions per image go through the same shared path.
    got = model.sample(annotations, K, max_length=6, seed=seed)
    word_seed, location_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    state, step_fn = _tiled_step_fn(model, annotations, K, location_seed)
    want = greedy_search(step_fn, state, B * K, 6, c.start_id, c.end_id, c.pad_id, sample_seed=word_seed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
