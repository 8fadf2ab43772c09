"""Caption normalisation, tokenisation and the vocabulary file.

One normalisation, written with TensorFlow / tensorflow-text ops, runs unchanged in Python (eagerly), inside
`tf.data.Dataset.map` and inside an exported SavedModel graph, so training, evaluation and serving split text the
same way. The policy, in order:

1. Bytes that are not valid UTF-8 become U+FFFD (which step 4 then drops), so no input makes the graph fail.
2. Typographic apostrophes (’ ‘ ʼ ` ´ ′) become "'" (before step 3, which would split ´ into a space and a
   combining accent).
3. Unicode NFKC_Casefold (`tensorflow_text.case_fold_utf8`, then NFKC again): lower case, compatibility forms
   folded ("ＡＢＣ" -> "abc", "ß" -> "ss", "①" -> "1").
4. Every character that is not a letter, a combining mark, a digit or "'" becomes a space: punctuation,
   symbols, hyphens ("t-shirt" -> "t shirt"), control characters and every kind of whitespace.
5. English clitics are split off the word they hang on, the way the Penn Treebank tokeniser (and therefore the
   Flickr8k captions themselves) writes them: "dog's" -> "dog 's", "don't" -> "do n't"; the clitics are
   's 're 've 'll 'd 'm and n't.
6. Split on whitespace. A word keeps an apostrophe only inside it ("o'clock", "n't") or at the start of a
   stand-alone clitic ("'s"); other leading/trailing apostrophes (quote marks) are removed, and words that are
   left empty are dropped.
7. The normalised caption is the words joined by single spaces (no leading/trailing space).

The vocabulary file is plain UTF-8 text, one token per line, the token's id being its 0-based line number; the
first four lines are the special tokens <pad> (0), <start> (1), <end> (2), <unk> (3), matching ModelConfig's
pad_id/start_id/end_id. Words follow by descending training count, ties by code point order, so the same captions
always give the same file, byte for byte (its sha256 is `Vocabulary.checksum()`).

A SavedModel whose graph uses these functions needs `import tensorflow_text` before `tf.saved_model.load`
(the case folding and NFKC ops are registered by that package).

TensorFlow and tensorflow-text are imported where they are used, not with this module: reading a vocabulary file
and turning ids into words (`Vocabulary.load(...).decode(...)`) works on a device with numpy alone (the LiteRT
runtime, `sat_tf.lite`).

Shapes: N captions, W words per caption (ragged), T = max_length + 2 token ids per encoded caption.
"""

from __future__ import annotations

import collections
import hashlib
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from sat_tf.files import write_atomic

PAD = "<pad>"
START = "<start>"
END = "<end>"
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = 0, 1, 2, 3

_WORD_CHAR = r"\p{L}\p{M}\p{N}"
_APOSTROPHES = "[\u2019\u2018\u02bc`\u00b4\u2032]"
_NOT_WORD = rf"[^{_WORD_CHAR}']+"
_CLITIC_S = rf"([{_WORD_CHAR}])'(s|re|ve|ll|d|m)(\s|$)"
_CLITIC_NT = rf"([{_WORD_CHAR}])n't(\s|$)"
_STANDALONE_CLITIC = "'(s|re|ve|ll|d|m)"
_EDGE_APOSTROPHES = "^'+|'+$"
_BATCH = 65536  # captions per eager call in the Python helpers: bounds memory, keeps the op count small


def _tensorflow():
    """(tensorflow, tensorflow_text), imported on first use (see the module docstring)."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    return tf, tf_text


def _as_string_tensor(text) -> tf.Tensor:
    tf, _ = _tensorflow()
    text = tf.convert_to_tensor(text, dtype=tf.string)
    if text.shape.rank not in (0, 1):
        raise ValueError(f"captions must be a scalar or a 1-D string tensor, got shape {text.shape}")
    return text


def _clean(text: tf.Tensor) -> tf.Tensor:
    """Steps 1-5 of the module policy, elementwise on a string tensor of any shape."""
    tf, tf_text = _tensorflow()
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
    text = tf.strings.regex_replace(text, _APOSTROPHES, "'")
    text = tf_text.normalize_utf8(tf_text.case_fold_utf8(text), "NFKC")
    text = tf.strings.regex_replace(text, _NOT_WORD, " ")
    # Clitic patterns consume the following space; a match never needs it (it starts at a word character), so one
    # global pass splits every clitic.
    text = tf.strings.regex_replace(text, _CLITIC_S, r"\1 '\2\3")
    return tf.strings.regex_replace(text, _CLITIC_NT, r"\1 n't\2")


def tokenize_caption(text) -> tf.Tensor | tf.RaggedTensor:
    """Normalises captions and splits them into words (steps 1-6 of the module policy).

    Args:
        text: a string scalar or 1-D string tensor (N,) (Python str / list of str accepted).

    Returns:
        For a scalar, a 1-D string tensor (W,); for (N,), a ragged string tensor (N, None).
    """
    tf, _ = _tensorflow()
    text = _as_string_tensor(text)
    scalar = text.shape.rank == 0
    words = tf.strings.split(_clean(tf.reshape(text, [-1])))  # (N, None)
    flat = words.flat_values
    stripped = tf.strings.regex_replace(flat, _EDGE_APOSTROPHES, "")
    flat = tf.where(tf.strings.regex_full_match(flat, _STANDALONE_CLITIC), flat, stripped)
    words = words.with_flat_values(flat)
    words = tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)
    return words[0] if scalar else words


def normalize_caption(text) -> tf.Tensor:
    """Normalises captions: the words of `tokenize_caption` joined by single spaces.

    Args:
        text: a string scalar or 1-D string tensor (N,) (Python str / list of str accepted).

    Returns:
        A string tensor of the same shape as `text`.
    """
    tf, _ = _tensorflow()
    return tf.strings.reduce_join(tokenize_caption(text), axis=-1, separator=" ")


def tokenize_captions(captions: Iterable[str]) -> list[list[str]]:
    """Python convenience: `tokenize_caption` run eagerly over many captions, returned as lists of str.

    Args:
        captions: iterable of caption strings.
    """
    tf, _ = _tensorflow()
    captions = list(captions)
    out: list[list[str]] = []
    for begin in range(0, len(captions), _BATCH):
        words = tokenize_caption(tf.constant(captions[begin:begin + _BATCH], dtype=tf.string))
        out.extend([w.decode("utf-8") for w in row] for row in words.to_list())
    return out


class Vocabulary:
    """Word <-> id mapping with the special tokens <pad>=0, <start>=1, <end>=2, <unk>=3.

    Build one from the training captions with `Vocabulary.build`, write it with `save` (atomic), read it back with
    `load`. `encode`/`decode` take and give Python and numpy values, with the normalisation of the module docstring.

    Args:
        tokens: every token in id order, starting with the four special tokens.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = tuple(tokens)
        if tokens[:len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIAL_TOKENS}, got "
                             f"{tokens[:len(SPECIAL_TOKENS)]}")
        seen: dict[str, int] = {}
        for i, token in enumerate(tokens):
            problem = _token_problem(token)
            if problem:
                raise ValueError(f"vocabulary token {i} {token!r}: {problem}")
            if token in seen:
                raise ValueError(f"vocabulary token {token!r} appears twice (ids {seen[token]} and {i})")
            seen[token] = i
        self._tokens = tokens
        self._ids = seen

    # Construction ----------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5, max_size: int | None = None) -> "Vocabulary":
        """Counts the normalised words of `captions` and keeps the frequent ones.

        Args:
            captions: raw training captions (normalised here with `tokenize_caption`).
            min_count: int. Keep words seen at least this many times (5 is the common Flickr choice; 1 keeps all).
            max_size: int or None. Cap on the whole vocabulary size, special tokens included (so it is
                ModelConfig.vocab_size); the most frequent words are kept (the paper: 10,000 for COCO).
        """
        if isinstance(captions, (str, bytes)):
            raise TypeError("Vocabulary.build takes an iterable of captions, not one string")
        counts = collections.Counter(word for words in tokenize_captions(captions) for word in words)
        return cls.from_counts(counts, min_count=min_count, max_size=max_size)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], min_count: int = 5,
                    max_size: int | None = None) -> "Vocabulary":
        """Builds from word counts: words with count >= min_count, by count descending then word, capped.

        Args:
            counts: word -> number of occurrences (words already normalised).
            min_count: int. Smallest count kept (>= 1).
            max_size: int or None. Cap on the vocabulary size including the 4 special tokens (> 4).
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"max_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {max_size}")
        words = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size - len(SPECIAL_TOKENS)]
        return cls(SPECIAL_TOKENS + tuple(words))

    @classmethod
    def load(cls, path: str | os.PathLike, expected_checksum: str | None = None) -> "Vocabulary":
        """Reads a vocabulary file written by `save`.

        Args:
            path: the file: UTF-8, one token per line, id = 0-based line number, final newline optional.
            expected_checksum: optional sha256 hex digest (from a manifest) that the file must match.

        Raises:
            FileNotFoundError: no file at `path`.
            ValueError: empty file, bad UTF-8, blank line, whitespace in a token, duplicate token, special tokens
                missing from lines 1-4, or a checksum mismatch; the message names the file and line.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"vocabulary file {path} does not exist") from None
        if not data.strip():
            raise ValueError(f"vocabulary file {path} is empty")
        if data.startswith(b"\xef\xbb\xbf"):
            raise ValueError(f"{path}:1: vocabulary file starts with a UTF-8 byte-order mark; write it without one")
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the final newline
        tokens: list[str] = []
        first_line: dict[str, int] = {}
        for number, raw in enumerate(lines, start=1):
            try:
                token = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            problem = _token_problem(token)
            if problem:
                raise ValueError(f"{path}:{number}: {problem}")
            if token in first_line:
                raise ValueError(f"{path}:{number}: duplicate token {token!r} (first on line {first_line[token]})")
            if number <= len(SPECIAL_TOKENS) and token != SPECIAL_TOKENS[number - 1]:
                raise ValueError(f"{path}:{number}: expected the special token {SPECIAL_TOKENS[number - 1]!r} "
                                 f"(id {number - 1}), found {token!r}")
            first_line[token] = number
            tokens.append(token)
        if len(tokens) < len(SPECIAL_TOKENS):
            raise ValueError(f"{path}:{len(tokens) + 1}: missing the special token {SPECIAL_TOKENS[len(tokens)]!r}"
                             f" (a vocabulary file starts with {', '.join(SPECIAL_TOKENS)})")
        vocab = cls(tokens)
        if expected_checksum is not None and vocab.checksum() != expected_checksum:
            raise ValueError(f"vocabulary file {path} has sha256 {vocab.checksum()}, expected {expected_checksum}: "
                             "it is not the vocabulary these features/weights were made with")
        return vocab

    # File ------------------------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The file content: UTF-8, one token per line, each line ending in a newline."""
        return "".join(token + "\n" for token in self._tokens).encode("utf-8")

    def checksum(self) -> str:
        """sha256 hex digest of the file content (`to_bytes`), for manifests."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike) -> str:
        """Writes the vocabulary file atomically (`sat_tf.files.write_atomic`).

        Args:
            path: destination file; its folder is created if needed.

        Returns:
            The checksum of what was written.
        """
        write_atomic(path, lambda f: f.write(self.to_bytes()), binary=True)
        return self.checksum()

    # Lookup ----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, checksum={self.checksum()[:12]}...)"

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token in id order."""
        return self._tokens

    @property
    def size(self) -> int:
        """Number of tokens including the special ones: ModelConfig.vocab_size."""
        return len(self._tokens)

    pad_id, start_id, end_id, unk_id = PAD_ID, START_ID, END_ID, UNK_ID

    def token_to_id(self, token: str) -> int:
        """Id of `token`, or unk_id for a word outside the vocabulary."""
        return self._ids.get(token, UNK_ID)

    def id_to_token(self, token_id: int) -> str:
        """Token of `token_id`; ValueError outside [0, size)."""
        if not 0 <= int(token_id) < len(self._tokens):
            raise ValueError(f"token id {token_id} is outside this vocabulary of {len(self._tokens)} tokens")
        return self._tokens[int(token_id)]

    def check_model_config(self, config) -> None:
        """Raises ValueError where a ModelConfig's vocab_size or special ids disagree with this vocabulary.

        Args:
            config: a sat_tf.config.ModelConfig (anything with vocab_size, pad_id, start_id, end_id).
        """
        wanted = {"vocab_size": len(self), "pad_id": PAD_ID, "start_id": START_ID, "end_id": END_ID}
        wrong = {k: getattr(config, k) for k, v in wanted.items() if getattr(config, k) != v}
        if wrong:
            raise ValueError(f"ModelConfig {wrong} does not match the vocabulary {wanted}")

    # Python / numpy encode and decode -----------------------------------------------------------------------------

    def encode(self, captions: str | Sequence[str], max_length: int) -> np.ndarray:
        """Normalises and encodes captions as <start> w_1 .. w_n <end> <pad>..., n <= max_length.

        Captions longer than max_length words are cut to their first max_length words (the <end> is kept).

        Args:
            captions: one caption (str) or a sequence of N captions.
            max_length: int. Most words per caption, not counting <start>/<end>.

        Returns:
            int32 array (max_length + 2,) for one caption, (N, max_length + 2) for a sequence.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        single = isinstance(captions, str)
        rows = tokenize_captions([captions] if single else captions)
        out = np.full((len(rows), max_length + 2), PAD_ID, np.int32)  # (N, T)
        for i, words in enumerate(rows):
            ids = [self._ids.get(w, UNK_ID) for w in words[:max_length]]
            out[i, :len(ids) + 2] = [START_ID, *ids, END_ID]
        return out[0] if single else out

    def decode(self, ids) -> str | list[str]:
        """Turns ids back into a caption: stops at <end>, skips <pad> and <start>, joins words by spaces.

        Args:
            ids: int array-like (T,) for one caption or (N, T) for N captions.

        Returns:
            A str for (T,), a list of N str for (N, T).
        """
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.decode(row) for row in ids]
        if ids.ndim != 1:
            raise ValueError(f"decode takes ids of shape (T,) or (N, T), got {ids.shape}")
        words = []
        for token_id in ids.tolist():
            if token_id == END_ID:
                break
            if token_id not in (PAD_ID, START_ID):
                words.append(self.id_to_token(token_id))
        return " ".join(words)

    def coverage(self, captions: Iterable[str], top: int = 10) -> dict:
        """How much of `captions` this vocabulary can say: the normalised words it lacks (they encode as <unk>).

        Args:
            captions: raw captions (normalised here, as `encode` does).
            top: int. How many of the most frequent missing words to list.

        Returns:
            JSON-ready {"words": distinct words, "unknown_words": of them not in the vocabulary, "tokens": word
            tokens, "unknown_tokens": of them not in the vocabulary, "most_frequent_unknown": [[word, count], ...]
            (count descending, then word)}.
        """
        counts = collections.Counter(word for words in tokenize_captions(captions) for word in words)
        unknown = {w: c for w, c in counts.items() if w not in self._ids}
        return {"words": len(counts), "unknown_words": len(unknown), "tokens": sum(counts.values()),
                "unknown_tokens": sum(unknown.values()),
                "most_frequent_unknown": [[w, unknown[w]]
                                          for w in sorted(unknown, key=lambda w: (-unknown[w], w))[:top]]}


def _token_problem(token: str) -> str | None:
    if token == "":
        return "blank line (empty token)"
    if token != token.strip() or any(ch.isspace() for ch in token):
        return (f"token {token!r} contains whitespace"
                + (" (Windows line ending? write the file with plain \\n)" if "\r" in token else ""))
    return None
