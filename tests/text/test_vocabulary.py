"""Tests of caption normalisation and the vocabulary: the policy, eager == Dataset.map == tf.function, the file
format and its errors, and encode/decode."""

import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.config import ModelConfig
from sat_tf.text import (END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNK_ID, Vocabulary, normalize_caption,
                         tokenize_caption)
from tests.text.helpers import normalize_captions

# Captions that exercise every step of the policy; the expected normal forms are written out below.
TRICKY = [
    "A child in a pink dress is climbing up a set of stairs in an entry way .",
    "  Two  DOGS\tplay,   in the\nsnow!  ",
    "A dog's toy; the man's t-shirt (red).",
    "He doesn't know what time it is: 3 o'clock.",
    "A dog 's bone and a cat 's bed",
    "\u201cQuoted\u201d 'slide' and tikes' 's",
    "ＦＵＬＬ-width ＡＢＣ and Straße \u2460",
    "The dog\u2019s ball and the cat\u00b4s",
    "caf\u00e9 ca\u0301fe \u00c9t\u00c9",
    "...",
    "",
]
EXPECTED = [
    "a child in a pink dress is climbing up a set of stairs in an entry way",
    "two dogs play in the snow",
    "a dog 's toy the man 's t shirt red",
    "he does n't know what time it is 3 o'clock",
    "a dog 's bone and a cat 's bed",
    "quoted slide and tikes 's",
    "full width abc and strasse 1",
    "the dog 's ball and the cat 's",
    "caf\u00e9 c\u00e1fe \u00e9t\u00e9",  # NFKC composes a + combining acute
    "",
    "",
]


def _vocab(min_count=1):
    return Vocabulary.build(TRICKY, min_count=min_count)


# Normalisation ---------------------------------------------------------------------------------------------------


def test_normalize_policy():
    assert normalize_captions(TRICKY) == EXPECTED


def test_normalize_eager_equals_dataset_map():
    eager = [s.decode("utf-8") for s in normalize_caption(tf.constant(TRICKY)).numpy()]
    per_element = tf.data.Dataset.from_tensor_slices(TRICKY).map(normalize_caption)
    batched = tf.data.Dataset.from_tensor_slices(TRICKY).batch(4).map(normalize_caption).unbatch()
    assert eager == EXPECTED
    assert [s.decode("utf-8") for s in per_element.as_numpy_iterator()] == EXPECTED
    assert [s.decode("utf-8") for s in batched.as_numpy_iterator()] == EXPECTED


def test_normalize_in_tf_function_scalar_and_batch():
    fn = tf.function(normalize_caption, input_signature=[tf.TensorSpec([], tf.string)])
    assert [fn(c).numpy().decode("utf-8") for c in TRICKY] == EXPECTED
    words = tokenize_caption(TRICKY[1])
    assert words.shape.rank == 1 and [w.decode() for w in words.numpy()] == EXPECTED[1].split()
    assert isinstance(tokenize_caption(TRICKY), tf.RaggedTensor)


def test_normalize_survives_invalid_utf8():
    out = normalize_caption(tf.constant([b"caf\xff\xfe ok", b"\xc3"])).numpy()
    assert out.tolist() == [b"caf ok", b""]


def test_normalize_rejects_rank_2():
    with pytest.raises(ValueError, match="scalar or a 1-D"):
        normalize_caption(tf.constant([["a"]]))


# Building ----------------------------------------------------------------------------------------------------------


def test_build_order_min_count_and_max_size():
    captions = ["b a", "a c", "a b", "d"]  # a:3, b:2, c:1, d:1
    assert Vocabulary.build(captions, min_count=1).tokens == SPECIAL_TOKENS + ("a", "b", "c", "d")
    assert Vocabulary.build(captions, min_count=2).tokens == SPECIAL_TOKENS + ("a", "b")
    assert Vocabulary.build(captions, min_count=1, max_size=6).tokens == SPECIAL_TOKENS + ("a", "b")
    # The same captions in another order give the same file, byte for byte.
    assert Vocabulary.build(captions[::-1], min_count=1).checksum() == Vocabulary.build(captions, 1).checksum()
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(captions, min_count=0)
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(captions, max_size=4)


def test_special_ids_match_model_config():
    vocab = _vocab()
    config = ModelConfig(vocab_size=len(vocab))
    assert (vocab.pad_id, vocab.start_id, vocab.end_id) == (config.pad_id, config.start_id, config.end_id)
    assert [vocab.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    vocab.check_model_config(config)
    with pytest.raises(ValueError, match="vocab_size"):
        vocab.check_model_config(ModelConfig(vocab_size=len(vocab) + 1))


# File --------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_checksum(tmp_path):
    vocab = _vocab()
    path = tmp_path / "vocab.txt"
    checksum = vocab.save(path)
    data = path.read_bytes()
    assert checksum == vocab.checksum() == hashlib.sha256(data).hexdigest()
    assert data.decode("utf-8").splitlines() == list(vocab.tokens)  # one token a line, id = line number
    loaded = Vocabulary.load(path, expected_checksum=checksum)
    assert loaded == vocab and loaded.tokens == vocab.tokens
    Vocabulary.build(["x"], min_count=1).save(path)  # overwrite in place
    assert Vocabulary.load(path).tokens == SPECIAL_TOKENS + ("x",)
    assert sorted(os.listdir(tmp_path)) == ["vocab.txt"]  # no temporary file left behind


def test_load_accepts_missing_final_newline(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIAL_TOKENS + ("dog",)), encoding="utf-8")
    assert Vocabulary.load(path).tokens[-1] == "dog"


def test_load_checksum_mismatch(tmp_path):
    path = tmp_path / "vocab.txt"
    _vocab().save(path)
    with pytest.raises(ValueError, match="expected 0000"):
        Vocabulary.load(path, expected_checksum="0000")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Vocabulary.load(tmp_path / "nope.txt")


def test_load_empty_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"\n")
    with pytest.raises(ValueError, match=rf"{path} is empty"):
        Vocabulary.load(path)


def test_load_duplicate_token(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIAL_TOKENS + ("dog", "cat", "dog")) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:7: duplicate token 'dog' \(first on line 5\)"):
        Vocabulary.load(path)


def test_load_blank_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIAL_TOKENS + ("dog", "", "cat")) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:6: blank line"):
        Vocabulary.load(path)


def test_load_wrong_special_tokens(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<pad>\n<end>\n<start>\n<unk>\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:2: expected the special token '<start>'"):
        Vocabulary.load(path)
    path.write_text("<pad>\n<start>\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:3: missing the special token '<end>'"):
        Vocabulary.load(path)


def test_load_bad_utf8_bom_and_crlf(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("\n".join(SPECIAL_TOKENS).encode() + b"\ncaf\xff\n")
    with pytest.raises(ValueError, match=rf"{path}:5: not valid UTF-8"):
        Vocabulary.load(path)
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(SPECIAL_TOKENS).encode() + b"\n")
    with pytest.raises(ValueError, match=rf"{path}:1: .*byte-order mark"):
        Vocabulary.load(path)
    path.write_bytes("\r\n".join(SPECIAL_TOKENS).encode() + b"\r\n")
    with pytest.raises(ValueError, match=rf"{path}:1: .*whitespace.*line ending"):
        Vocabulary.load(path)


# Encode / decode ---------------------------------------------------------------------------------------------------


def test_encode_decode_round_trip():
    vocab = _vocab()
    ids = vocab.encode(TRICKY, max_length=30)  # (N, 32)
    assert ids.dtype == np.int32 and ids.shape == (len(TRICKY), 32)
    assert (ids[:, 0] == START_ID).all()
    assert vocab.decode(ids) == EXPECTED
    one = vocab.encode(TRICKY[1], max_length=30)
    assert one.shape == (32,) and vocab.decode(one) == EXPECTED[1]


def test_encode_truncates_pads_and_marks_unknown_words():
    vocab = Vocabulary.build(["a dog runs"], min_count=1)
    ids = vocab.encode(["a cat runs fast", ""], max_length=2)
    a, runs = vocab.token_to_id("a"), vocab.token_to_id("runs")
    np.testing.assert_array_equal(ids, [[START_ID, a, UNK_ID, END_ID], [START_ID, END_ID, PAD_ID, PAD_ID]])
    assert vocab.decode([START_ID, a, UNK_ID, runs, END_ID]) == "a <unk> runs"


def test_decode_stops_at_end_and_skips_pad_and_start():
    vocab = Vocabulary.build(["a dog runs"], min_count=1)
    a, dog, runs = (vocab.token_to_id(w) for w in ("a", "dog", "runs"))
    assert vocab.decode([START_ID, a, PAD_ID, dog, END_ID, runs, END_ID]) == "a dog"
    assert vocab.decode([a, dog, runs]) == "a dog runs"  # no <end>: up to the last id
    with pytest.raises(ValueError, match="outside this vocabulary"):
        vocab.decode([START_ID, 99])
