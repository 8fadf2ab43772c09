"""Repeated n-grams in captions: "a boy in a blue shirt is wearing a blue shirt" repeats the trigram "a blue shirt".

The one definition used wherever repetition is measured: the evaluation report (generated captions and their
references), the dev-split decoding sweep (`benchmarks/length_sweep.py`) and the tests of n-gram blocking in
decoding (`sat_tf.decoding.beam_search.ngram_ban`, which guarantees a rate of 0 for its n and every larger n).
A caption repeats an n-gram when some n consecutive words occur at two positions (overlaps count: "a a a" repeats
the bigram "a a"). Captions are word sequences: strings are split on whitespace.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

REPORTED_SIZES = (3, 2)  # the trigram-repeat rate first, then the bigram one


def repeated_ngrams(words: Sequence, n: int) -> list[tuple]:
    """The distinct n-grams that occur more than once in `words`, in the order their second occurrence ends.

    Args:
        words: a sequence of words (or token ids), or a string (split on whitespace).
        n: int >= 1. The n-gram size.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = words.split() if isinstance(words, str) else list(words)
    seen, repeated = set(), []
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen and gram not in repeated:
            repeated.append(gram)
        seen.add(gram)
    return repeated


def has_repeated_ngram(words: Sequence, n: int) -> bool:
    """True when some n-gram occurs twice in `words` (a sequence or a string)."""
    return bool(repeated_ngrams(words, n))


def repeat_rate(captions: Iterable, n: int = 3) -> float:
    """The share of captions (0..1) that repeat an n-gram; NaN for no captions.

    Args:
        captions: iterable of captions, each a string or a word sequence.
        n: int >= 1. 3: the trigram-repeat rate.
    """
    flags = [has_repeated_ngram(caption, n) for caption in captions]
    return sum(flags) / len(flags) if flags else math.nan
