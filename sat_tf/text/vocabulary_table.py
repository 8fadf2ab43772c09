"""The vocabulary inside TensorFlow graphs: word <-> id hash tables with encode/decode in TensorFlow ops.

`sat_tf.text.vocabulary.Vocabulary.table()` builds one; `Dataset.map` pipelines and exported SavedModels use it.
It lives apart from `Vocabulary` because it is a `tf.Module`: the vocabulary file and numpy decoding must not need
TensorFlow (the LiteRT runtime, `sat_tf.lite`).

Shapes: N captions, T = max_length + 2 token ids per encoded caption.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from sat_tf.text.vocabulary import (END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNK, UNK_ID, _as_string_tensor,
                                    tokenize_caption)


class VocabularyTable(tf.Module):
    """Graph-side vocabulary: word -> id and id -> word hash tables with encode/decode in TensorFlow ops.

    A tf.Module, so an exported module that holds one as an attribute saves its tables with it. The same
    normalisation and the same rules as `Vocabulary.encode`/`decode`; ids outside the vocabulary decode to <unk>
    (a graph cannot raise the way the Python version does).

    Args:
        tokens: every token in id order, starting with <pad>, <start>, <end>, <unk>.
        name: module name.
    """

    def __init__(self, tokens: Sequence[str], name: str | None = None):
        super().__init__(name=name)
        tokens = list(tokens)
        if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        self.size = len(tokens)
        keys = tf.constant(tokens, dtype=tf.string)
        ids = tf.range(len(tokens), dtype=tf.int64)
        self.word_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, ids), default_value=UNK_ID, name="word_to_id")
        self.id_to_word = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(ids, keys), default_value=UNK, name="id_to_word")

    def lookup_ids(self, words):
        """Words -> int32 ids (unk for unknown words); dense or ragged string tensor of any shape."""
        if isinstance(words, tf.RaggedTensor):
            return tf.ragged.map_flat_values(self.lookup_ids, words)
        return tf.cast(self.word_to_id.lookup(tf.convert_to_tensor(words, tf.string)), tf.int32)

    def lookup_words(self, ids):
        """Ids -> words (<unk> outside the vocabulary); dense or ragged int tensor of any shape."""
        if isinstance(ids, tf.RaggedTensor):
            return tf.ragged.map_flat_values(self.lookup_words, ids)
        return self.id_to_word.lookup(tf.cast(ids, tf.int64))

    def encode(self, captions, max_length: int) -> tf.Tensor:
        """Normalises and encodes captions: <start> w_1 .. w_n <end> <pad>..., n <= max_length.

        Args:
            captions: string scalar or (N,).
            max_length: int (Python). Most words per caption, not counting <start>/<end>.

        Returns:
            int32 (T,) for a scalar, (N, T) for (N,), T = max_length + 2.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        captions = _as_string_tensor(captions)
        scalar = captions.shape.rank == 0
        words = tokenize_caption(tf.reshape(captions, [-1]))  # (N, None)
        ids = self.lookup_ids(words)[:, :max_length]  # (N, <= max_length)
        n = ids.nrows()
        start = tf.fill([n, 1], START_ID)
        end = tf.fill([n, 1], END_ID)
        ids = tf.concat([start, ids, end], axis=1)  # ragged (N, <= T)
        ids = ids.to_tensor(default_value=PAD_ID, shape=[None, max_length + 2])  # (N, T)
        return ids[0] if scalar else ids

    def decode(self, ids) -> tf.Tensor:
        """Ids -> captions: stops at the first <end>, skips <pad> and <start>, joins words by spaces.

        Args:
            ids: int tensor (T,) or (N, T).

        Returns:
            string scalar for (T,), (N,) for (N, T).
        """
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
        if ids.shape.rank not in (1, 2):
            raise ValueError(f"decode takes ids of shape (T,) or (N, T), got {ids.shape}")
        after_end = tf.cumsum(tf.cast(ids == END_ID, tf.int32), axis=-1) > 0  # at or after the first <end>
        keep = ~after_end & (ids != PAD_ID) & (ids != START_ID)
        if ids.shape.rank == 1:
            return tf.strings.reduce_join(tf.boolean_mask(self.lookup_words(ids), keep), separator=" ")
        words = tf.ragged.boolean_mask(self.lookup_words(ids), keep)  # (N, None)
        return tf.strings.reduce_join(words, axis=-1, separator=" ")
