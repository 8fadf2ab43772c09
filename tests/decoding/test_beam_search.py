import numpy as np
import pytest
import tensorflow as tf

from sat_tf.decoding.beam_search import beam_search, greedy_search, tile_beams

PAD, START, END, A, B = 0, 1, 2, 3, 4
V = 5


def _table(rows):
    """rows: {prev token: {next token: p}} -> (V, V) log-prob table (tiny mass elsewhere)."""
    p = np.full((V, V), 1e-6)
    for prev, nxt in rows.items():
        for tok, prob in nxt.items():
            p[prev, tok] = prob
    p /= p.sum(1, keepdims=True)
    return np.log(p).astype("float32")


# Image 0: greedy takes A (0.55) and then wanders (A 0.36 each step); the best caption is "B <end>" (0.45*0.99).
TABLE_TRAP = _table({START: {A: 0.55, B: 0.45}, A: {END: 0.30, A: 0.36, B: 0.34}, B: {END: 0.99, A: 0.01}})
# Image 1: greedy is optimal: "A <end>".
TABLE_EASY = _table({START: {A: 0.9, B: 0.1}, A: {END: 0.95, B: 0.05}, B: {END: 0.5, A: 0.5}})
TABLES = tf.constant(np.stack([TABLE_TRAP, TABLE_EASY]))  # (2, V, V)


def _step_fn(tokens, state, t):
    """Markov language model: state = (image index,) per row; records the token it was fed."""
    image = state[0]
    log_probs = tf.gather_nd(TABLES, tf.stack([image, tokens], axis=1))  # (N, V)
    return log_probs, state, {"fed": tf.cast(tokens, tf.float32), "step": tf.fill(tf.shape(tokens), t)}


def _decode(images, beam_size, max_length=6, length_penalty=0.0):
    images = tf.constant(images, tf.int32)
    if beam_size == 0:
        return greedy_search(_step_fn, [images], len(images), max_length, START, END, PAD)
    return beam_search(_step_fn, [tile_beams(images, beam_size)], len(images), beam_size, max_length, START, END,
                       PAD, length_penalty)


def test_beam_search_beats_greedy_where_greedy_is_suboptimal():
    greedy = _decode([0], beam_size=0)
    beam = _decode([0], beam_size=2)
    np.testing.assert_array_equal(beam["tokens"][0, 0], [B, END, PAD, PAD, PAD, PAD])
    assert greedy["tokens"][0, 0] == A
    np.testing.assert_allclose(beam["log_probs"][0, 0], np.log(0.45 * 0.99), rtol=1e-4)
    assert beam["log_probs"][0, 0] > greedy["log_probs"][0] + 0.5


def test_batched_equals_per_image_and_records_follow_their_beams():
    both = _decode([0, 1], beam_size=3)
    for i in range(2):
        alone = _decode([i], beam_size=3)
        for name in both:
            np.testing.assert_allclose(both[name][i], alone[name][0], err_msg=name)
    np.testing.assert_array_equal(both["tokens"][1, 0, :2], [A, END])
    # Each hypothesis' records are those of its own history: at step t it was fed the token chosen at t - 1.
    tokens, fed, lengths = both["tokens"].numpy(), both["fed"].numpy(), both["lengths"].numpy()
    for i in range(2):
        for k in range(3):
            n = lengths[i, k]
            np.testing.assert_array_equal(fed[i, k, :n], [START] + list(tokens[i, k, :n - 1]))
            np.testing.assert_array_equal(fed[i, k, n:], 0)
            np.testing.assert_array_equal(both["step"][i, k, :n], np.arange(n))


def test_beams_are_sorted_finished_and_scored_consistently():
    out = _decode([0, 1], beam_size=3, length_penalty=1.0)
    scores, log_probs, lengths = out["scores"].numpy(), out["log_probs"].numpy(), out["lengths"].numpy()
    np.testing.assert_allclose(scores, log_probs / lengths, rtol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    tokens = out["tokens"].numpy()
    for i in range(2):
        for k in range(3):
            n = lengths[i, k]
            if n < tokens.shape[-1]:
                assert tokens[i, k, n - 1] == END and np.all(tokens[i, k, n:] == PAD)
            # log-probs are the sums of the table entries along the path
            path = [START] + list(tokens[i, k, :n])
            want = sum(TABLES.numpy()[i, a, b] for a, b in zip(path[:-1], path[1:]))
            np.testing.assert_allclose(log_probs[i, k], want, rtol=1e-4)


def test_beam_of_one_is_greedy():
    greedy = _decode([0, 1], beam_size=0)
    beam = _decode([0, 1], beam_size=1)
    np.testing.assert_array_equal(greedy["tokens"], beam["tokens"][:, 0])
    np.testing.assert_allclose(greedy["log_probs"], beam["log_probs"][:, 0], rtol=1e-6)


def test_max_length_stops_unfinished_hypotheses():
    out = _decode([0], beam_size=0, max_length=3)
    # Greedy on image 0 takes A (0.55), then A again (0.36 beats END 0.30) until the length runs out: no END.
    np.testing.assert_array_equal(out["tokens"], [[A, A, A]])
    assert out["lengths"][0] == 3
    np.testing.assert_allclose(out["log_probs"][0], np.log(0.55) + 2 * np.log(0.36), rtol=1e-4)
    beams = _decode([0], beam_size=2, max_length=2)  # "B <end>" ends in time; the runner-up is cut at 2 tokens
    np.testing.assert_array_equal(beams["tokens"][0, 0], [B, END])
    assert beams["lengths"].numpy().tolist() == [[2, 2]] and END not in beams["tokens"][0, 1].numpy()


def test_runs_inside_tf_function_with_dynamic_batch():
    fn = tf.function(lambda images: beam_search(_step_fn, [tile_beams(images, 2)], tf.shape(images)[0], 2, 6,
                                                START, END, PAD),
                     input_signature=[tf.TensorSpec([None], tf.int32)])
    out = fn(tf.constant([0, 1, 0]))
    np.testing.assert_array_equal(out["tokens"][0, 0, :2], [B, END])
    np.testing.assert_array_equal(out["tokens"][2], out["tokens"][0])


def test_invalid_beam_size():
    with pytest.raises(ValueError, match="beam_size"):
        _decode([0], beam_size=-1)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(_step_fn, [tf.constant([0])], 1, 0, 6, START, END, PAD)


def test_sampling_draws_from_the_step_distribution_and_repeats_with_its_seed():
    rows = 4000
    images = tf.ones([rows], tf.int32)  # TABLE_EASY: first token A with p 0.9, B 0.1
    seed = tf.constant([7, 11], tf.int32)
    out = greedy_search(_step_fn, [images], rows, 4, START, END, PAD, sample_seed=seed)
    first = out["tokens"][:, 0].numpy()
    assert abs(np.mean(first == A) - 0.9) < 0.02 and abs(np.mean(first == B) - 0.1) < 0.02
    # Second token given A: END 0.95; given B: END 0.5 (so some samples are longer than greedy's "A <end>").
    second = out["tokens"][:, 1].numpy()
    assert abs(np.mean(second[first == B] == END) - 0.5) < 0.1
    # log_probs are the sampled captions' own log-probabilities: the table's entries along each path
    table, tokens, lengths = TABLE_EASY, out["tokens"].numpy(), out["lengths"].numpy()
    want = [sum(table[a, b] for a, b in zip([START, *row[:n - 1]], row[:n])) for row, n in zip(tokens, lengths)]
    np.testing.assert_allclose(out["log_probs"].numpy(), want, rtol=1e-4, atol=1e-5)
    again = greedy_search(_step_fn, [images], rows, 4, START, END, PAD, sample_seed=seed)
    np.testing.assert_array_equal(out["tokens"].numpy(), again["tokens"].numpy())
    other = greedy_search(_step_fn, [images], rows, 4, START, END, PAD, sample_seed=tf.constant([7, 12]))
    assert np.any(out["tokens"].numpy() != other["tokens"].numpy())


# A short caption "A <end>" (p = 0.6 * 0.9 = 0.54) against a long one "B C D <end>" (p = 0.4: after B the rest is
# nearly certain): plain log-probability prefers the short one (-0.62 vs -0.92); so does log p / length**0.5 (-0.44
# vs -0.46); per-token mean log-probability (length_penalty 1) prefers the long one (-0.31 vs -0.23).
C, D = 5, 6
LENGTH_TABLE = np.full((7, 7), 1e-6)
for _prev, _next in {START: {A: 0.6, B: 0.4}, A: {END: 0.9, C: 0.1}, B: {C: 0.99}, C: {D: 0.99},
                     D: {END: 0.99}}.items():
    for _tok, _p in _next.items():
        LENGTH_TABLE[_prev, _tok] = _p
LENGTH_TABLE = tf.constant(np.log(LENGTH_TABLE / LENGTH_TABLE.sum(1, keepdims=True)).astype("float32"))  # (V, V)


def _length_step_fn(tokens, state, t):
    return tf.gather(LENGTH_TABLE, tokens), state, {}  # (N, V)


def _length_decode(beam_size, length_penalty=0.0, min_length=0):
    if beam_size == 0:
        return greedy_search(_length_step_fn, [tf.zeros([1])], 1, 6, START, END, PAD, min_length=min_length)
    return beam_search(_length_step_fn, [tf.zeros([beam_size])], 1, beam_size, 6, START, END, PAD, length_penalty,
                       min_length=min_length)


@pytest.mark.parametrize("length_penalty, winner", [(0.0, [A, END]), (0.5, [A, END]), (1.0, [B, C, D, END])])
def test_length_penalty_changes_which_caption_wins(length_penalty, winner):
    out = _length_decode(beam_size=2, length_penalty=length_penalty)
    best = out["tokens"].numpy()[0, 0]
    np.testing.assert_array_equal(best[:len(winner)], winner)
    assert np.all(best[len(winner):] == PAD)
    # both captions were found either way: only the ranking changed (-0.62 / 2**a vs -0.92 / 4**a)
    found = {tuple(row[:n]) for row, n in zip(out["tokens"].numpy()[0], out["lengths"].numpy()[0])}
    assert found == {(A, END), (B, C, D, END)}
    np.testing.assert_allclose(sorted(out["log_probs"].numpy()[0]), [np.log(0.4), np.log(0.54)], rtol=1e-3)


def test_min_length_bars_the_end_token_until_enough_words():
    out = _length_decode(beam_size=2, min_length=3)
    np.testing.assert_array_equal(out["tokens"].numpy()[0, 0, :4], [B, C, D, END])
    assert np.all(out["lengths"].numpy() >= 4)  # 3 words + the end token, in every beam
    greedy = _length_decode(beam_size=0, min_length=3)
    np.testing.assert_array_equal(greedy["tokens"].numpy()[0, :4], [A, C, D, END])  # A, then END is barred
    np.testing.assert_array_equal(_length_decode(beam_size=0)["tokens"].numpy()[0, :2], [A, END])
