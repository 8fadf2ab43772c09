"""n-gram blocking (`no_repeat_ngram_size`): with n > 0 no hypothesis of greedy, sampled or beam search ever contains
a repeated n-gram, even where the model strongly prefers one; with n = 0 decoding is what it was; the numpy app
loop of the TFLite export (`sat_tf.lite.search`) blocks by the same rule and returns the graph search's beams.

The decoders here are Markov language models with a random table per image that favours a short cycle of words
(so unblocked captions loop: "c d e c d e ..."), over a vocabulary small enough that bans run out of words.

Shapes: B images, K beams, S max length, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.decoding.beam_search import (NEG_INF, beam_search, block_ngrams, greedy_search, ngram_ban,
                                        tile_beams)
from sat_tf.lite import search as lite_search
from sat_tf.lite.runtime import StepDecoder
from sat_tf.metrics.repetition import has_repeated_ngram
from sat_tf.text.vocabulary import END_ID, PAD_ID, START_ID

V = 10  # PAD, START, END and 7 words
S = 10


def loop_tables(seed: int, images: int, end_prob: float = 0.08) -> np.ndarray:
    """(B, V, V) log-prob tables: after word w, the next word of a random 2- or 3-word cycle has p ~ 0.7, <end>
    `end_prob`, the rest shares what is left at random; <pad> and <start> are never emitted (the decoder's mask)."""
    rng = np.random.default_rng(seed)
    tables = []
    for _ in range(images):
        words = rng.permutation(np.arange(3, V))
        cycle = words[:rng.integers(2, 4)]
        p = rng.random((V, V)) * 0.3 / (V - 3)
        for i, w in enumerate(cycle):
            p[w, cycle[(i + 1) % len(cycle)]] = 0.7
        p[START_ID, cycle[0]] = 0.7
        p[:, END_ID] = end_prob
        p[:, [PAD_ID, START_ID]] = 0.0
        p /= p.sum(1, keepdims=True)
        with np.errstate(divide="ignore"):
            tables.append(np.maximum(np.log(p), NEG_INF).astype(np.float32))
    return np.stack(tables)


def markov_step_fn(tables: np.ndarray):
    """step_fn over rows whose state is (image index (N,),): log p(next | previous token) of the row's image."""
    tables = tf.constant(tables)  # (B, V, V)

    def step_fn(tokens, state, t):
        return tf.gather_nd(tables, tf.stack([state[0], tokens], axis=1)), state, {}  # (N, V)

    return step_fn


def decode(tables, beam_size: int, n: int, max_length: int = S, length_penalty: float = 0.0, **kwargs):
    """Greedy (beam_size 0: (B, S) outputs) or beam search (B, K, S) of the Markov decoder."""
    batch = len(tables)
    images = tf.range(batch)
    step_fn = markov_step_fn(tables)
    if beam_size == 0:
        return greedy_search(step_fn, [images], batch, max_length, START_ID, END_ID, PAD_ID,
                             no_repeat_ngram_size=n, **kwargs)
    return beam_search(step_fn, [tile_beams(images, beam_size)], batch, beam_size, max_length, START_ID, END_ID,
                       PAD_ID, length_penalty, no_repeat_ngram_size=n, **kwargs)


def words_of(tokens: np.ndarray, length: int) -> list[int]:
    """A hypothesis' words: its tokens before <end> (all of them when it never ended)."""
    return [int(x) for x in tokens[:length] if x != END_ID]


def hypotheses(out) -> list[tuple[list[int], bool]]:
    """(words, ended) of every hypothesis of a greedy (B, S) or beam (B, K, S) output."""
    tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()
    tokens, lengths = tokens.reshape(-1, tokens.shape[-1]), lengths.reshape(-1)
    return [(words_of(row, n), END_ID in row[:n]) for row, n in zip(tokens, lengths)]


def brute_force_ban(prefix: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram of `prefix`, by enumeration."""
    grams = {tuple(prefix[i:i + n]) for i in range(len(prefix) - n + 1)}
    return {w for w in range(V) if tuple(prefix[len(prefix) - n + 1:] + [w]) in grams} if len(prefix) >= n - 1 else set()


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_ban_in_the_graph_and_in_numpy_is_the_enumerated_rule(n):
    rng = np.random.default_rng(n)
    prefixes = rng.integers(3, 6, size=(16, S)).astype(np.int32)  # 3 words: many repeats
    for t in range(S + 1):
        want = np.zeros((16, V), bool)
        for r in range(16):
            want[r, sorted(brute_force_ban(list(prefixes[r, :t]), n))] = True
        graph = ngram_ban(tf.constant(prefixes), tf.constant(t), n, V).numpy()
        np.testing.assert_array_equal(graph, want, err_msg=f"t={t}")
        np.testing.assert_array_equal(lite_search.ngram_ban(prefixes, t, n, V), want, err_msg=f"t={t}")
        log_probs = rng.normal(size=(16, V)).astype(np.float32)  # beam search's in-place form of the same ban
        np.testing.assert_array_equal(block_ngrams(tf.constant(log_probs), tf.constant(prefixes), tf.constant(t), n),
                                      np.where(want, np.float32(NEG_INF), log_probs), err_msg=f"t={t}")
    # what follows column t - 1 is ignored: the ban reads the prefix only
    noisy = prefixes.copy()
    noisy[:, 5:] = 9
    np.testing.assert_array_equal(ngram_ban(tf.constant(noisy), tf.constant(5), n, V).numpy(),
                                  ngram_ban(tf.constant(prefixes), tf.constant(5), n, V).numpy())


def test_start_token_does_not_count():
    # "<start> a" then "a": the bigram (<start>, a) is not part of the prefix, so "a a" is allowed once
    banned = ngram_ban(tf.constant([[5, PAD_ID, PAD_ID]]), tf.constant(1), 2, V).numpy()
    assert not banned.any()


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("beam_size", [0, 1, 4])
def test_no_hypothesis_repeats_an_ngram(beam_size, n):
    ended, unended, blocked_somewhere = 0, 0, False
    for seed in range(6):
        tables = loop_tables(seed, images=3, end_prob=0.08 if seed % 2 else 0.005)  # some never end in S steps
        free = hypotheses(decode(tables, beam_size, 0))
        out = decode(tables, beam_size, n)
        for words, done in hypotheses(out):
            assert not has_repeated_ngram(words, n), (seed, words)
            ended, unended = ended + done, unended + (not done)
        blocked_somewhere |= any(has_repeated_ngram(words, n) for words, _ in free)
        # every chosen token was allowed: the log-probs are finite sums of the table's entries
        assert np.all(out["log_probs"].numpy() > NEG_INF / 2)
    assert blocked_somewhere, "the unblocked decoder never repeated itself: the test shows nothing"
    assert ended and (unended or n == 1), "both ended and unended hypotheses should be checked"


def test_sampling_never_draws_a_banned_token():
    tables = loop_tables(0, images=4)
    out = decode(tables, 0, 2, sample_seed=tf.constant([3, 4], tf.int32))
    assert not any(has_repeated_ngram(words, 2) for words, _ in hypotheses(out))


@pytest.mark.parametrize("beam_size", [0, 3])
def test_off_and_never_firing_bans_change_nothing(beam_size):
    tables = loop_tables(1, images=3)
    plain = (greedy_search(markov_step_fn(tables), [tf.range(3)], 3, S, START_ID, END_ID, PAD_ID) if not beam_size
             else beam_search(markov_step_fn(tables), [tile_beams(tf.range(3), beam_size)], 3, beam_size, S,
                              START_ID, END_ID, PAD_ID))
    for n in (0, S + 1):  # an n-gram longer than any caption cannot repeat
        out = decode(tables, beam_size, n)
        for name in plain:
            np.testing.assert_array_equal(out[name].numpy(), plain[name].numpy(), err_msg=f"{name}, n={n}")


def test_blocking_is_the_same_when_ended_images_leave_the_batch():
    """beam_search(images=) drops an image once its beams end; the prefixes must follow the surviving rows."""
    tables = loop_tables(2, images=4, end_prob=0.2)
    table = tf.constant(tables)

    def step_fn(tokens, state, t, images):  # images: (B_a,) indices of the images still searching
        rows = tf.repeat(images, 3)  # (N_a,)
        return tf.gather_nd(table, tf.stack([rows, tokens], axis=1)), state, {}

    compact = beam_search(step_fn, [tf.zeros([12])], 4, 3, S, START_ID, END_ID, PAD_ID, 0.5, images=tf.range(4),
                          no_repeat_ngram_size=2)
    full = decode(tables, 3, 2, length_penalty=0.5)
    lengths = compact["lengths"].numpy()
    assert lengths.max(axis=1).min() < lengths.max(), "no image left the batch early"
    for name in ("tokens", "lengths", "log_probs", "scores"):
        np.testing.assert_allclose(compact[name].numpy(), full[name].numpy(), rtol=1e-6, err_msg=name)


def test_inside_tf_function_with_a_dynamic_batch():
    tables = tf.constant(loop_tables(3, images=3))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def fn(images):
        def step_fn(tokens, state, t):
            return tf.gather_nd(tables, tf.stack([state[0], tokens], axis=1)), state, {}

        return beam_search(step_fn, [tile_beams(images, 3)], tf.shape(images)[0], 3, S, START_ID, END_ID, PAD_ID,
                           no_repeat_ngram_size=2)

    out = fn(tf.constant([0, 1, 2]))
    np.testing.assert_array_equal(out["tokens"].numpy(), decode(tables.numpy(), 3, 2)["tokens"].numpy())


def test_xla_compiles_the_blocked_searches():
    tables = loop_tables(4, images=3)
    step_fn = markov_step_fn(tables)
    beam = tf.function(lambda: beam_search(step_fn, [tile_beams(tf.range(3), 4)], 3, 4, S, START_ID, END_ID, PAD_ID,
                                           no_repeat_ngram_size=2), jit_compile=True)
    greedy = tf.function(lambda: greedy_search(step_fn, [tf.range(3)], 3, S, START_ID, END_ID, PAD_ID,
                                               no_repeat_ngram_size=2), jit_compile=True)
    np.testing.assert_array_equal(beam()["tokens"].numpy(), decode(tables, 4, 2)["tokens"].numpy())
    np.testing.assert_array_equal(greedy()["tokens"].numpy(), decode(tables, 0, 2)["tokens"].numpy())


def test_negative_size_is_refused():
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        decode(loop_tables(0, 1), 0, -1)
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        decode(loop_tables(0, 1), 2, -1)


class MarkovStepDecoder(StepDecoder):
    """The app loop of `sat_tf.lite` over the Markov tables instead of a TFLite model: the image index rides in
    `annotations` (B, 1, 1), h and c are unused."""

    def __init__(self, tables: np.ndarray):
        self.tables = tables

    def encode(self, images):
        batch = len(images)
        zeros = np.zeros((batch, 1), np.float32)
        return {"annotations": np.asarray(images, np.float32).reshape(batch, 1, 1),
                "projected": np.zeros((batch, 1, 1), np.float32), "h": zeros, "c": zeros}

    def step(self, tokens, h, c, annotations, projected):
        image = annotations[:, 0, 0].astype(np.int64)  # (N,)
        return {"log_probs": self.tables[image, tokens], "h": h, "c": c,
                "alpha": np.ones((len(tokens), 1), np.float32)}


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_numpy_app_loop_returns_the_graph_search_with_blocking(n):
    for seed in range(4):
        tables = loop_tables(10 + seed, images=3)
        app = MarkovStepDecoder(tables)
        greedy = app.greedy(np.arange(3), S, no_repeat_ngram_size=n)
        want = decode(tables, 0, n)
        np.testing.assert_array_equal(greedy["tokens"], want["tokens"].numpy())
        np.testing.assert_allclose(greedy["log_probs"], want["log_probs"].numpy(), rtol=1e-5)
        beams = app.beam_search(np.arange(3), 4, S, length_penalty=0.7, no_repeat_ngram_size=n)
        want = decode(tables, 4, n, length_penalty=0.7)
        np.testing.assert_array_equal(beams["tokens"], want["tokens"].numpy())
        np.testing.assert_array_equal(beams["lengths"], want["lengths"].numpy())
        np.testing.assert_allclose(beams["scores"], want["scores"].numpy(), rtol=1e-5)


def test_captioner_ensemble_and_mirrored_views_pass_blocking_through():
    """A random Captioner over 12 tokens loops; `generate` of it, of an ensemble and of its mirrored views with
    n = 2 never repeat a bigram in any beam (the ensemble mixes soft and hard attention)."""
    from sat_tf.config import ModelConfig
    from sat_tf.decoding.ensemble import CaptionEnsemble
    from sat_tf.decoding.mirrored import mirrored_inputs, with_mirrored_views
    from sat_tf.models.captioner import Captioner

    config = ModelConfig(vocab_size=12, feature_dim=8, embedding_dim=8, units=16, attention_dim=8, dropout=0.0)
    soft = Captioner.from_model_config(config, seed=1)
    hard = Captioner.from_model_config(dataclasses.replace(config, attention="hard"), seed=2)
    annotations = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)  # (B, L, D)
    mirrored = mirrored_inputs(annotations, annotations[:, ::-1])
    free = soft.generate(annotations, beam_size=4, max_length=S, return_all_beams=True)
    assert any(has_repeated_ngram(words, 2) for words, _ in hypotheses(free)), "the test shows nothing"
    for decoder, inputs, beam_size in [(soft, annotations, 4), (soft, annotations, 1),
                                       (CaptionEnsemble([soft, hard]), annotations, 4),
                                       (with_mirrored_views(soft), mirrored, 1)]:
        out = decoder.generate(inputs, beam_size=beam_size, max_length=S, return_all_beams=True,
                               no_repeat_ngram_size=2)
        assert not any(has_repeated_ngram(words, 2) for words, _ in hypotheses(out)), type(decoder).__name__
