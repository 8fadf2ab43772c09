"""Caption helpers for tests."""

from __future__ import annotations

from typing import Iterable

from sat_tf.text.vocabulary import tokenize_captions


def normalize_captions(captions: Iterable[str]) -> list[str]:
    """`sat_tf.text.normalize_caption` run eagerly over many captions, returned as a list of str (the words of
    `tokenize_captions` joined by single spaces)."""
    return [" ".join(words) for words in tokenize_captions(captions)]
