"""Batched greedy and beam search over any step function.

B images are decoded with K beams each as one (B*K)-row batch: there is no Python loop over images, and the
loop over time is a `tf.while_loop`, so the same code runs eagerly, inside `tf.function` and inside an exported
SavedModel. Per-step records (attention maps, hard-attention locations) are kept with their beams (beam search
traces each final hypothesis back through its parents), so each final hypothesis carries the attention maps that
produced it.

With `no_repeat_ngram_size` n > 0 a hypothesis never emits a token that would complete an n-gram already in its
own prefix (`ngram_ban`, `block_ngrams`): each live row keeps the words it generated (B, K, S), reordered with its
parents.

Shapes: B batch, K beams, N = B*K rows, V vocabulary, S max length, R a record's own trailing shape, W = S - n + 1
n-gram windows of a prefix.

The step function has the signature
    step_fn(tokens (N,) int32, state (nested (N, ...)), t int32 scalar) -> (log_probs (N, V), state, records)
where `records` is a dict of (N, *R) tensors to keep per step (it may be empty).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from sat_tf.decoding.ranking import NEG_INF, ranking_scores  # noqa: F401 (NEG_INF: re-exported for decoders)


def tile_beams(x, beam_size: int):
    """Repeats each example K times consecutively: (B, ...) -> (B*K, ...), row b*K + k is beam k of image b."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    return tf.repeat(x, beam_size, axis=0)


def _while(cond, body, loop_vars):
    """tf.while_loop whose loop variables may change their leading (batch) dimension between static and dynamic."""
    def invariant(v):
        if isinstance(v, tf.TensorArray):
            return tf.TensorShape(None)  # the element shape is not constrained (infer_shape=False)
        return tf.TensorShape(None if v.shape.rank is None else [None] + v.shape[1:] if v.shape.rank else [])

    invariants = tf.nest.map_structure(invariant, loop_vars)
    return tf.while_loop(cond, body, loop_vars, shape_invariants=invariants)


def _record_buffers(records_spec, batch_size, beam_size, max_length):
    return {name: tf.zeros(tf.concat([[batch_size, beam_size, max_length], tf.shape(v)[1:]], 0), v.dtype)
            for name, v in records_spec.items()}


def _write_step(buffer, value, t, max_length, live):
    """buffer (B, K, S, *R) with value (B, K, *R) written at step t where `live` (B, K) is True."""
    value = tf.where(tf.reshape(live, tf.concat([tf.shape(live), tf.ones(tf.rank(value) - 2, tf.int32)], 0)),
                     value, tf.zeros_like(value))
    one_hot = tf.one_hot(t, max_length, dtype=buffer.dtype)  # (S,)
    one_hot = tf.reshape(one_hot, tf.concat([[1, 1, max_length], tf.ones(tf.rank(value) - 2, tf.int32)], 0))
    return buffer + one_hot * tf.expand_dims(value, 2)


def _beam_major(x, beam_size, max_length, trailing_shape=()):
    """Per-step values (S, B, K, *R) -> (B, K, S, *R)."""
    x = tf.transpose(x, tf.concat([[1, 2, 0], tf.range(3, tf.rank(x))], 0))
    x.set_shape(tf.TensorShape([None, beam_size, max_length]).concatenate(trailing_shape))
    return x


def beam_search(step_fn: Callable, initial_state, batch_size, beam_size: int, max_length: int, start_id: int,
                end_id: int, pad_id: int = 0, length_penalty: float = 0.0, images=None, min_length: int = 0,
                no_repeat_ngram_size: int = 0):
    """Batched beam search.

    Args:
        step_fn: see the module docstring; it is called on N = B*K rows (with `images`, on the rows of the images
            still searching, and with their `images` as a fourth argument).
        initial_state: nested structure of (B*K, ...) tensors, already tiled with `tile_beams`.
        batch_size: B (int or scalar tensor).
        beam_size: K.
        max_length: S, the most tokens generated per hypothesis (the end token included).
        start_id, end_id, pad_id: special token ids; tokens after the end token are `pad_id`.
        length_penalty: alpha; hypotheses are ranked by log p / length**alpha (`sat_tf.decoding.ranking`; 0: plain log-probability,
            1: mean log-probability per token). Pruning during search uses the plain sums.
        min_length: the end token is barred before step `min_length`, so every hypothesis has at least that many
            words (0: no minimum). Unlike the penalty it acts during the search, where short captions that end
            early would otherwise crowd longer ones out of the K beams.
        no_repeat_ngram_size: n; a hypothesis never emits a token that would complete an n-gram that already occurs
            in its own prefix (the words generated after <start>; <start> itself does not count), the
            `no_repeat_ngram_size` of Hugging Face's `generate` and fairseq (0: off). The ban acts during the
            search, on every live beam; `log_probs` stay the model's own (a banned token is removed, the others are
            not renormalised).
        images: optional nested structure of per-image (B, ...) tensors that step_fn reads (annotations, say),
            passed as `step_fn(tokens, state, t, images)`. Given it, an image leaves the batch as soon as its K
            beams have all ended: later steps run on the remaining images' rows and images only (a batch runs as
            long as its longest search, but no longer costs that much for every image). Without it, step_fn
            must not close over per-image tensors of a dropped image, so every image stays to the end. The
            shrinking batch has a dynamic leading dimension, which XLA cannot compile: leave `images` out under
            `jit_compile`.

    Returns:
        dict with `tokens` (B, K, S) int32, `lengths` (B, K) int32 (tokens up to and including the end token),
        `log_probs` (B, K) summed log-probabilities, `scores` (B, K) the ranking score, every record as
        (B, K, S, *R); beams sorted best first. Dropping finished images does not change them (a finished beam
        only ever continues with the end token at no cost), up to the float rounding of the step's matmuls on
        a smaller batch.

    The loop keeps only the live state; each step's tokens, parent beams and records go to TensorArrays as they
    are (no per-step copy or reordering of whole histories), and the histories of the final beams are read back
    once, after the loop, by following their parent links from the last step to the first.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    _check_ngram_size(no_repeat_ngram_size)
    k = beam_size
    compact = images is not None
    call = (lambda tokens, state, t, images: step_fn(tokens, state, t, images)) if compact else (
        lambda tokens, state, t, images: step_fn(tokens, state, t))
    images = () if images is None else tf.nest.map_structure(tf.convert_to_tensor, images)
    n = batch_size * k
    tokens = tf.fill([n], tf.constant(start_id, tf.int32))
    # Only beam 0 is live at t=0, otherwise the K beams would be K copies of one hypothesis.
    log_probs = tf.tile(tf.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch_size, 1])  # (B, K)
    finished = tf.zeros([batch_size, k], tf.bool)
    lengths = tf.zeros([batch_size, k], tf.int32)
    # (B, K, S) the words of every live beam so far, pads after them: the prefix n-gram blocking reads. Zero-width
    # without blocking, so the search carries nothing it does not need.
    prefixes = tf.fill([batch_size, k, max_length if no_repeat_ngram_size else 0], tf.constant(pad_id, tf.int32))
    active = tf.range(batch_size)  # (B_a,) the images still searching, as indices into the B images

    # One trace of step_fn to learn the record names and dtypes; it is also step 0.
    step_log_probs, state, records = call(tokens, initial_state, tf.constant(0), images)
    vocab = tf.shape(step_log_probs)[-1]
    only_end = tf.one_hot(end_id, vocab, on_value=0.0, off_value=NEG_INF)  # (V,)

    def history(dtype):  # one element per step; fixed size, so that XLA can compile the search too
        return tf.TensorArray(dtype, size=max_length, infer_shape=False)

    # Per step t, for the K beams of every image after the step: the token (pad after the end), whether the beam
    # was live, its parent among the K beams before the step; and each record of the N rows before the step, as
    # step_fn gave it. Images no longer searching read as after the end: pad, not live, their own parent, zeros.
    beams = {"token": history(tf.int32), "live": history(tf.bool), "parent": history(tf.int32)}
    histories = {name: history(v.dtype) for name, v in records.items()}

    def full(value, active, default):  # (B_a, K, *R) of the active images -> (B, K, *R)
        if not compact:
            return value
        shape = tf.concat([[batch_size], tf.shape(value)[1:]], 0)
        return tf.tensor_scatter_nd_update(tf.broadcast_to(tf.cast(default, value.dtype), shape),
                                           active[:, None], value)

    def expand(t, step_log_probs, records, log_probs, finished, lengths, prefixes, active, beams, histories):
        b = tf.shape(active)[0]  # B_a
        step_log_probs = tf.cast(step_log_probs, tf.float32)  # (B_a*K, V)
        if no_repeat_ngram_size:
            step_log_probs = block_ngrams(step_log_probs, tf.reshape(prefixes, [b * k, max_length]), t,
                                          no_repeat_ngram_size)  # (B_a*K, V)
        step_log_probs = tf.reshape(step_log_probs, [b, k, vocab])  # (B_a, K, V)
        if min_length:
            step_log_probs = _bar_end(step_log_probs, t, min_length, end_id, vocab)
        # A finished beam continues only with the end token, at no cost, so it competes with its final score.
        step_log_probs = tf.where(finished[:, :, None], only_end[None, None, :], step_log_probs)
        candidates = tf.reshape(log_probs[:, :, None] + step_log_probs, [b, k * vocab])  # (B_a, K*V)
        new_log_probs, index = tf.math.top_k(candidates, k=k)  # (B_a, K)
        parent = index // vocab  # (B_a, K)
        token = tf.cast(index % vocab, tf.int32)  # (B_a, K)
        was_finished = tf.gather(finished, parent, batch_dims=1)  # (B_a, K)
        live = tf.logical_not(was_finished)
        token = tf.where(live, token, pad_id)
        lengths = tf.gather(lengths, parent, batch_dims=1) + tf.cast(live, tf.int32)
        finished = tf.logical_or(was_finished, tf.equal(token, end_id))
        if no_repeat_ngram_size:  # each beam inherits its parent's prefix and appends its token at column t
            prefixes = tf.where(tf.equal(tf.range(max_length), t)[None, None, :], token[:, :, None],
                                tf.gather(prefixes, parent, batch_dims=1))  # (B_a, K, S)
        own = tf.range(k)[None]  # (1, K): the parent of a beam after its image's search
        beams = {"token": beams["token"].write(t, full(token, active, pad_id)),
                 "live": beams["live"].write(t, full(live, active, False)),
                 "parent": beams["parent"].write(t, full(parent, active, own))}

        def full_rows(value):  # (N_a, *R) -> (N, *R)
            if not compact:
                return value
            value = tf.reshape(value, tf.concat([[b, k], tf.shape(value)[1:]], 0))
            value = full(value, active, 0)
            return tf.reshape(value, tf.concat([[batch_size * k], tf.shape(value)[2:]], 0))

        histories = {name: histories[name].write(t, full_rows(value)) for name, value in records.items()}
        return (new_log_probs, finished, lengths, prefixes, parent, beams, histories,
                tf.where(live, token, end_id))

    def advance(parent, tokens, state, images, active, log_probs, finished, lengths, prefixes, final):
        """After a step: the state follows each beam's parent; with `images`, the images whose K beams have all
        ended leave the batch, their results kept in `final` (full-size log_probs, finished, lengths)."""
        b = tf.shape(active)[0]
        rows = parent + tf.range(b)[:, None] * k  # (B_a, K) rows of the step's batch
        if compact:
            final = [tf.tensor_scatter_nd_update(f, active[:, None], v)
                     for f, v in zip(final, (log_probs, finished, lengths))]
            keep = tf.where(tf.logical_not(tf.reduce_all(finished, axis=1)))[:, 0]  # (B_a',)
            rows, tokens = tf.gather(rows, keep), tf.gather(tf.reshape(tokens, [b, k]), keep)
            log_probs, finished, lengths, prefixes = (tf.gather(x, keep)
                                                      for x in (log_probs, finished, lengths, prefixes))
            images = tf.cond(tf.size(keep) < b,  # copy the per-image tensors only when an image left
                             lambda: tf.nest.map_structure(lambda x: tf.gather(x, keep), images),
                             lambda: images)
            active = tf.gather(active, keep)
        state = tf.nest.map_structure(lambda s: tf.gather(s, tf.reshape(rows, [-1])), state)
        return tf.reshape(tokens, [-1]), state, images, active, log_probs, finished, lengths, prefixes, final

    final = [log_probs, finished, lengths]  # (B, K) each, for the images that left the batch
    log_probs, finished, lengths, prefixes, parent, beams, histories, tokens = expand(
        tf.constant(0), step_log_probs, records, log_probs, finished, lengths, prefixes, active, beams, histories)
    tokens, state, images, active, log_probs, finished, lengths, prefixes, final = advance(
        parent, tokens, state, images, active, log_probs, finished, lengths, prefixes, final)

    def cond(t, tokens, state, images, active, log_probs, finished, lengths, prefixes, final, beams, histories):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, tokens, state, images, active, log_probs, finished, lengths, prefixes, final, beams, histories):
        step_log_probs, state, records = call(tokens, state, t, images)
        log_probs, finished, lengths, prefixes, parent, beams, histories, tokens = expand(
            t, step_log_probs, records, log_probs, finished, lengths, prefixes, active, beams, histories)
        tokens, state, images, active, log_probs, finished, lengths, prefixes, final = advance(
            parent, tokens, state, images, active, log_probs, finished, lengths, prefixes, final)
        return (t + 1, tokens, state, images, active, log_probs, finished, lengths, prefixes, final, beams,
                histories)

    steps_done, _, _, _, active, log_probs, finished, lengths, _, final, beams, histories = _while(
        cond, body, (tf.constant(1), tokens, state, images, active, log_probs, finished, lengths, prefixes, final,
                     beams, histories))
    if compact:  # every image has left the batch (or the search reached max_length: the rest are still in it)
        log_probs, finished, lengths = (tf.tensor_scatter_nd_update(f, active[:, None], v)
                                        for f, v in zip(final, (log_probs, finished, lengths)))

    # Once every hypothesis has ended, the remaining steps change nothing: each beam is its own parent, pads.
    def pad_step(t, beams, histories):
        beams = {"token": beams["token"].write(t, tf.fill([batch_size, k], tf.constant(pad_id, tf.int32))),
                 "live": beams["live"].write(t, tf.zeros([batch_size, k], tf.bool)),
                 "parent": beams["parent"].write(t, tf.tile(tf.range(k)[None], [batch_size, 1]))}
        histories = {name: histories[name].write(t, tf.zeros_like(value)) for name, value in records.items()}
        return t + 1, beams, histories

    _, beams, histories = _while(lambda t, *_: t < max_length, pad_step, (steps_done, beams, histories))

    scores = ranking_scores(log_probs, lengths, length_penalty, xp=tnp)  # (B, K)
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)  # (B, K)

    # Backtracking, from the last step S-1 down to 0: beam[t] is the ancestor, among the K beams after step t, of
    # each final beam (in ranking order); source[t] = parent[t][beam[t]] is the row step t ran for it.
    def back(carry, parent):
        _, source = carry  # source[t + 1] is beam[t]
        return source, tf.gather(parent, source, batch_dims=1)

    def steps(name):  # (S, B, K)
        return tf.reshape(beams[name].stack(), [max_length, batch_size, k])

    beam, source = tf.scan(back, steps("parent"), initializer=(order, order), reverse=True)  # (S, B, K) each
    live = tf.gather(steps("live"), beam, batch_dims=2)  # (S, B, K)
    out = {"tokens": _beam_major(tf.gather(steps("token"), beam, batch_dims=2), k, max_length),
           **{name: tf.gather(value, order, batch_dims=1)
              for name, value in (("lengths", lengths), ("log_probs", log_probs), ("scores", scores))}}
    for name in records:
        value = histories[name].stack()  # (S, N, *R)
        value = tf.reshape(value, tf.concat([[max_length, batch_size, k], tf.shape(value)[2:]], 0))
        value = tf.gather(value, source, batch_dims=2)  # (S, B, K, *R)
        mask = tf.reshape(live, tf.concat([tf.shape(live), tf.ones(tf.rank(value) - 3, tf.int32)], 0))
        out[name] = _beam_major(tf.where(mask, value, tf.zeros_like(value)), k, max_length, records[name].shape[1:])
    return out


def ngram_ban(prefixes, t, n: int, vocab):
    """(R, V) bool: True for the tokens that would complete an n-gram already in each row's prefix.

    Row r's prefix is prefixes[r, :t] (the words generated so far; what follows column t-1 is ignored). Its last
    n-1 words are compared with every earlier window of n-1 words, and the word that followed each match is
    banned: emitting it would repeat that n-gram. n = 1 bans every word already used. Cost per step: (n-1) R x W
    comparisons and one scatter of R x W entries into (R, V), with W = S - n + 1 (no (R, W, V) one-hot). Builtin
    TFLite ops only (GATHER, EQUAL, LOGICAL_AND, SCATTER_ND), so the one-call TFLite model can block too.

    Args:
        prefixes: int32 (R, S) with a static S, the words of each row in columns 0 .. t-1.
        t: int32 scalar, words generated so far (the step about to choose word t+1).
        n: int >= 1. The n-gram size.
        vocab: V (int or int32 scalar).
    """
    rows = tf.shape(prefixes)[0]
    windows = _ngram_windows(prefixes, t, n)
    if windows is None:
        return tf.zeros([rows, vocab], tf.bool)
    match, indices = windows
    hits = tf.scatter_nd(indices, tf.cast(match, tf.float32), tf.stack([rows, vocab]))  # (R, V) matches per word
    return hits > 0.0


def block_ngrams(step_log_probs, prefixes, t, n: int):
    """(R, V) `step_log_probs` with NEG_INF at every token `ngram_ban` bans, written in place by one
    `tensor_scatter_nd_min` of R x W entries: no (R, V) mask is built (beam search's R = B*K rows make that the
    larger cost). Not a TFLite builtin; the greedy search, which the one-call TFLite model runs, uses `ngram_ban`.

    Args:
        step_log_probs: float32 (R, V).
        prefixes, t, n: as in `ngram_ban`.
    """
    windows = _ngram_windows(prefixes, t, n)
    if windows is None:
        return step_log_probs
    match, indices = windows
    floor = tf.where(match, tf.constant(NEG_INF, tf.float32), tf.constant(float("inf"), tf.float32))  # (R, W)
    return tf.tensor_scatter_nd_min(step_log_probs, indices, floor)


def _ngram_windows(prefixes, t, n: int):
    """(match (R, W) bool, indices (R, W, 2) int32) of `ngram_ban`: whether window j's first n-1 words equal the
    row's last n-1 words, and [row, the word that completed window j's n-gram]; None when S < n."""
    rows = tf.shape(prefixes)[0]
    width = prefixes.shape[1] - n + 1  # W: windows whose n-gram fits in S columns
    if width <= 0:
        return None
    # Window j holds the complete n-gram prefixes[j : j+n] only once j + n <= t.
    match = tf.broadcast_to(tf.range(width)[None, :] <= t - n, [rows, width])  # (R, W)
    for i in range(n - 1):
        last = tf.gather(prefixes, tf.maximum(t - n + 1 + i, 0), axis=1)  # (R,) word t-n+1+i of each row
        match = tf.logical_and(match, tf.equal(prefixes[:, i:i + width], last[:, None]))  # (R, W)
    following = prefixes[:, n - 1:]  # (R, W) the word that completed window j's n-gram
    indices = tf.stack([tf.broadcast_to(tf.range(rows)[:, None], [rows, width]), following], axis=-1)  # (R, W, 2)
    return match, indices


def _check_ngram_size(no_repeat_ngram_size: int) -> None:
    if int(no_repeat_ngram_size) < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0 (0: off), got {no_repeat_ngram_size}")


def _bar_end(step_log_probs, t, min_length: int, end_id: int, vocab):
    """(..., V) log-probs with the end token at NEG_INF while step t < min_length (a caption of t words)."""
    too_short = tf.logical_and(t < min_length, tf.equal(tf.range(vocab), end_id))  # (V,)
    return tf.where(too_short, tf.constant(NEG_INF, step_log_probs.dtype), step_log_probs)


def greedy_search(step_fn: Callable, initial_state, batch_size, max_length: int, start_id: int, end_id: int,
                  pad_id: int = 0, sample_seed=None, min_length: int = 0, no_repeat_ngram_size: int = 0):
    """Greedy decoding: the arg-max token at every step. Same contract as `beam_search` with K = 1, returning
    (B, S) tokens, (B,) lengths and log_probs, and (B, S, *R) records.

    With `sample_seed` (int32 (2,) stateless seed) every token is instead drawn from the step's distribution
    (ancestral sampling: the caption is an exact draw from the model, e.g. for diverse captions or sequence-level
    training); step t uses fold_in(sample_seed, t), so a seed gives the same captions in any run. `min_length` and
    `no_repeat_ngram_size` as in `beam_search` (the ban applies to sampling too: a banned token is never drawn).
    """
    _check_ngram_size(no_repeat_ngram_size)
    tokens = tf.fill([batch_size], tf.constant(start_id, tf.int32))
    step_log_probs, state, records = step_fn(tokens, initial_state, tf.constant(0))

    def pick(t, step_log_probs, records, log_probs, finished, lengths, sequences, buffers):
        step_log_probs = tf.cast(step_log_probs, tf.float32)  # (B, V)
        if min_length:
            step_log_probs = _bar_end(step_log_probs, t, min_length, end_id, tf.shape(step_log_probs)[-1])
        if no_repeat_ngram_size:  # `sequences` holds each live row's words in columns 0 .. t-1
            banned = ngram_ban(sequences, t, no_repeat_ngram_size, tf.shape(step_log_probs)[-1])  # (B, V)
            step_log_probs = tf.where(banned, tf.constant(NEG_INF, tf.float32), step_log_probs)
        if sample_seed is None:
            token = tf.argmax(step_log_probs, axis=-1, output_type=tf.int32)  # (B,)
        else:
            token = tf.random.stateless_categorical(
                step_log_probs, 1, seed=tf.random.experimental.stateless_fold_in(sample_seed, t),
                dtype=tf.int32)[:, 0]  # (B,)
        live = tf.logical_not(finished)
        chosen = tf.gather(step_log_probs, token, batch_dims=1)  # (B,)
        log_probs += tf.where(live, chosen, 0.0)
        token = tf.where(live, token, pad_id)
        sequences = _write_step(sequences[:, None], token[:, None], t, max_length, live[:, None])[:, 0]
        buffers = {name: _write_step(buf[:, None], records[name][:, None], t, max_length, live[:, None])[:, 0]
                   for name, buf in buffers.items()}
        lengths += tf.cast(live, tf.int32)
        finished = tf.logical_or(finished, tf.equal(token, end_id))
        return log_probs, finished, lengths, sequences, buffers, tf.where(live, token, end_id)

    buffers = {name: buf[:, 0] for name, buf in _record_buffers(records, batch_size, 1, max_length).items()}
    log_probs, finished, lengths, sequences, buffers, tokens = pick(
        tf.constant(0), step_log_probs, records, tf.zeros([batch_size]), tf.zeros([batch_size], tf.bool),
        tf.zeros([batch_size], tf.int32), tf.fill([batch_size, max_length], tf.constant(pad_id, tf.int32)), buffers)

    def cond(t, tokens, state, log_probs, finished, lengths, sequences, buffers):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, tokens, state, log_probs, finished, lengths, sequences, buffers):
        step_log_probs, state, records = step_fn(tokens, state, t)
        log_probs, finished, lengths, sequences, buffers, tokens = pick(
            t, step_log_probs, records, log_probs, finished, lengths, sequences, buffers)
        return t + 1, tokens, state, log_probs, finished, lengths, sequences, buffers

    _, _, _, log_probs, _, lengths, sequences, buffers = _while(
        cond, body, (tf.constant(1), tokens, state, log_probs, finished, lengths, sequences, buffers))
    return {"tokens": sequences, "lengths": lengths, "log_probs": log_probs, "scores": log_probs, **buffers}
