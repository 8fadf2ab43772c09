"""Compiled batched decoding with a cache of traced functions, shared by `Captioner` and `CaptionEnsemble`.

Shapes: B images, K beams, S max length, L locations.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def generate(decode: Callable, cache: dict, annotations, beam_size: int = 1, max_length: int = 20,
             length_penalty: float = 0.0, return_all_beams: bool = False, suppress_unk: bool = True,
             min_length: int = 0, no_repeat_ngram_size: int = 0):
    """Runs `decode(annotations, beam_size=, max_length=, length_penalty=, suppress_unk=, min_length=,
    no_repeat_ngram_size=)` (annotations: (B, L, D) or a tuple of such tensors) as a `tf.function` traced once per
    (beam_size, max_length, length_penalty, suppress_unk, min_length, no_repeat_ngram_size) and kept in `cache`.

    Returns decode's dict (`tokens` (B, S), `lengths` (B,), `log_probs` (B,), `scores` (B,), records such as
    `alpha` (B, S, L)); with beam_size > 1 only the best beam of each image unless `return_all_beams`, in which
    case every output keeps its beam axis K after B, best beam first.
    """
    key = (int(beam_size), int(max_length), float(length_penalty), bool(suppress_unk), int(min_length),
           int(no_repeat_ngram_size))
    if key not in cache:
        cache[key] = tf.function(
            lambda a: decode(a, beam_size=key[0], max_length=key[1], length_penalty=key[2], suppress_unk=key[3],
                             min_length=key[4], no_repeat_ngram_size=key[5]),
            reduce_retracing=True)
    out = cache[key](tf.nest.map_structure(tf.convert_to_tensor, annotations))
    if beam_size > 1 and not return_all_beams:
        out = {name: value[:, 0] for name, value in out.items()}
    return out
