"""Beam search's per-step histories (tokens, records) read back through the parent links after the loop: checked
against a plain Python beam search that copies every hypothesis' whole history at every step."""

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.decoding.beam_search import NEG_INF, beam_search, tile_beams

PAD, START, END = 0, 1, 2
V = 7


def _tables(seed, end_bias=1.0):
    """(images, V, V) Markov log-prob tables, peaked enough that some hypotheses end early."""
    rng = np.random.RandomState(seed)
    logits = rng.randn(3, V, V) * 2.0
    logits[:, :, END] += rng.randn(3, V) + end_bias
    return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype("float32")


def _step_fn(tables):
    tables = tf.constant(tables)

    def step_fn(tokens, state, t):
        image, previous = state
        log_probs = tf.gather_nd(tables, tf.stack([image, tokens], axis=1))  # (N, V)
        records = {"fed": tf.cast(tokens, tf.float32) + 0.5,
                   "pair": tf.stack([previous, tokens + 10 * t], axis=1),  # (N, 2) int32
                   "parent": tokens}  # a record may have any name, even one beam_search uses inside
        return log_probs, (image, tokens), records

    return step_fn


def _reference(tables, images, k, max_length):
    """Beam search with Python lists, the same rules as `beam_search` (ties: lower flat index first)."""
    out = []
    for image in images:
        table = tables[image]
        # one hypothesis per beam: (log_prob, finished, tokens, fed, pair, previous token)
        beams = [(np.float32(0.0 if j == 0 else NEG_INF), False, [], [], [], 0) for j in range(k)]
        last = [START] * k
        for t in range(max_length):
            if all(b[1] for b in beams):
                break
            candidates = []
            for j, (lp, done, *_rest) in enumerate(beams):
                row = np.full(V, np.float32(NEG_INF)) if done else table[last[j]]
                if done:
                    row[END] = 0.0
                for v in range(V):
                    candidates.append((-(np.float32(lp) + np.float32(row[v])), j * V + v))
            chosen = sorted(candidates)[:k]
            new = []
            for negative, index in chosen:
                j, v = divmod(index, V)
                lp, done, tokens, fed, pair, previous = beams[j]
                live = not done
                token = v if live else PAD
                record_fed = float(last[j]) + 0.5 if live else 0.0
                record_pair = [previous, last[j] + 10 * t] if live else [0, 0]
                new.append((np.float32(-negative), done or token == END, tokens + [token], fed + [record_fed],
                            pair + [record_pair], last[j]))
            beams = new
            last = [b[2][-1] if not b[1] else END for b in beams]
        order = sorted(range(k), key=lambda j: -beams[j][0])  # stable, as argsort(stable=True)
        pad = max_length - len(beams[0][2])
        out.append({"tokens": [beams[j][2] + [PAD] * pad for j in order],
                    "log_probs": [beams[j][0] for j in order],
                    "fed": [beams[j][3] + [0.0] * pad for j in order],
                    "pair": [beams[j][4] + [[0, 0]] * pad for j in order]})
    return {name: np.array([o[name] for o in out]) for name in out[0]}


@pytest.mark.parametrize("k,max_length,seed,end_bias", [
    (1, 5, 0, 1.0), (2, 4, 1, 1.0), (3, 8, 2, 1.0), (4, 12, 3, 1.0), (5, 3, 4, 1.0),
    (3, 15, 5, 4.0),  # every hypothesis ends early: the loop stops before max_length
])
def test_histories_match_a_beam_search_that_copies_every_history(k, max_length, seed, end_bias):
    tables = _tables(seed, end_bias)
    images = [0, 1, 2, 1]
    ids = tile_beams(tf.constant(images, tf.int32), k)
    state = (ids, tf.zeros_like(ids))
    got = beam_search(_step_fn(tables), state, len(images), k, max_length, START, END, PAD)
    want = _reference(tables, images, k, max_length)
    if end_bias > 1:
        assert np.all(want["tokens"][..., -2:] == PAD)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-6)
    np.testing.assert_array_equal(got["fed"], want["fed"])
    np.testing.assert_array_equal(got["pair"], want["pair"])
    np.testing.assert_array_equal(got["parent"], np.where(want["fed"] == 0, 0, want["fed"] - 0.5))
    assert got["pair"].dtype == tf.int32 and got["pair"].shape == (len(images), k, max_length, 2)


def test_static_shapes_in_a_graph_with_a_dynamic_batch():
    step_fn = _step_fn(_tables(0))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def decode(images):
        ids = tile_beams(images, 3)
        return beam_search(step_fn, (ids, tf.zeros_like(ids)), tf.shape(images)[0], 3, 6, START, END, PAD)

    shapes = {name: spec.shape.as_list() for name, spec in decode.get_concrete_function().structured_outputs.items()}
    assert shapes == {"tokens": [None, 3, 6], "lengths": [None, 3], "log_probs": [None, 3], "scores": [None, 3],
                      "fed": [None, 3, 6], "pair": [None, 3, 6, 2], "parent": [None, 3, 6]}
    out = decode(tf.constant([0, 2], tf.int32))
    assert out["pair"].shape == (2, 3, 6, 2)


def test_compiles_with_xla_and_gives_the_same_histories():
    tables = _tables(5, end_bias=4.0)  # every hypothesis ends early, as in the test above
    step_fn = _step_fn(tables)

    def decode(images):
        ids = tile_beams(images, 3)
        return beam_search(step_fn, (ids, tf.zeros_like(ids)), tf.shape(images)[0], 3, 15, START, END, PAD)

    images = tf.constant([0, 1, 2, 1], tf.int32)
    got = tf.function(decode, jit_compile=True)(images)
    want = decode(images)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)


def _image_step_fn(calls=None):
    """The step function of `_step_fn` with its table passed per image (`beam_search(..., images=)`), so that the
    search can drop the images that have ended; `calls` collects the number of images of each eager call."""

    def step_fn(tokens, state, t, images):
        tables = images  # (B', V, V)
        if calls is not None:
            calls.append(int(tables.shape[0]))
        image, previous = state
        rows = tf.repeat(tf.range(tf.shape(tables)[0]), tf.shape(tokens)[0] // tf.shape(tables)[0])  # (N',)
        log_probs = tf.gather_nd(tables, tf.stack([rows, tokens], axis=1))  # (N', V)
        records = {"fed": tf.cast(tokens, tf.float32) + 0.5,
                   "pair": tf.stack([previous, tokens + 10 * t], axis=1),
                   "parent": tokens}
        return log_probs, (image, tokens), records

    return step_fn


@pytest.mark.parametrize("k,max_length,seed,end_bias", [
    (1, 5, 0, 1.0), (2, 4, 1, 1.0), (3, 8, 2, 1.0), (4, 12, 3, 1.0), (3, 15, 5, 4.0), (3, 15, 6, 0.5),
])
def test_dropping_ended_images_gives_the_same_search(k, max_length, seed, end_bias):
    tables = _tables(seed, end_bias)
    images = [0, 1, 2, 1, 2, 0]
    ids = tile_beams(tf.constant(images, tf.int32), k)
    calls = []
    got = beam_search(_image_step_fn(calls), (ids, tf.zeros_like(ids)), len(images), k, max_length, START, END, PAD,
                      images=tf.gather(tables, images))
    want = _reference(tables, images, k, max_length)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-6)
    np.testing.assert_array_equal(got["fed"], want["fed"])
    np.testing.assert_array_equal(got["pair"], want["pair"])
    whole = beam_search(_step_fn(tables), (ids, tf.zeros_like(ids)), len(images), k, max_length, START, END, PAD)
    for name in whole:
        np.testing.assert_array_equal(got[name], whole[name], err_msg=name)
    # Each step ran on exactly the images whose search had not ended: an image whose K final beams have at most
    # e tokens (the end token included) is in the calls of steps 0 .. e-1 only.
    ended_after = got["lengths"].numpy().max(-1)  # (B,)
    assert calls == [int((ended_after > t).sum()) for t in range(len(calls))]
    assert len(calls) == ended_after.max()


def test_dropping_ended_images_in_a_graph_with_a_dynamic_batch():
    tables = _tables(2)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def decode(images):
        ids = tile_beams(images, 3)
        return beam_search(_image_step_fn(), (ids, tf.zeros_like(ids)), tf.shape(images)[0], 3, 9, START, END, PAD,
                           images=tf.gather(tables, images))

    shapes = {name: spec.shape.as_list() for name, spec in decode.get_concrete_function().structured_outputs.items()}
    assert shapes["tokens"] == [None, 3, 9] and shapes["pair"] == [None, 3, 9, 2]
    images = [2, 0, 1, 1]
    got = decode(tf.constant(images, tf.int32))
    want = _reference(tables, images, 3, 9)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-6)
