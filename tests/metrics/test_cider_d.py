"""CIDEr-D reward: equal to pycocoevalcap's scorer when the corpus is the scored set; corpus-level idf otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sat_tf.metrics.cider_d import CiderD, ngram_counts

REFS = {
    "1": ["a dog runs on the grass", "a brown dog is running", "the dog runs across a green field"],
    "2": ["two children play in the water", "kids splash in a pool", "two kids are swimming"],
    "3": ["a man rides a bike down the street", "a cyclist on a city road", "a man on a bicycle"],
    "4": ["a dog jumps into the water", "a black dog swims", "a dog is splashing in a lake"],
}
CANDIDATES = {"1": "a dog runs on the grass", "2": "two kids play in the pool", "3": "a man on a bike",
              "4": "a dog runs in the water"}


def test_ngram_counts_counts_every_order():
    counts = ngram_counts(["a", "b", "a"], n=2)
    assert counts == {("a",): 2, ("b",): 1, ("a", "b"): 1, ("b", "a"): 1}


def test_equals_pycocoevalcap_when_the_corpus_is_the_scored_set():
    from pycocoevalcap.cider.cider import Cider

    ids = sorted(REFS)
    mean, per_image = Cider().compute_score(REFS, {i: [CANDIDATES[i]] for i in ids})
    scorer = CiderD([[r.split() for r in REFS[i]] for i in ids])
    ours = scorer.score([CANDIDATES[i].split() for i in ids], [[r.split() for r in REFS[i]] for i in ids])
    np.testing.assert_allclose(ours, per_image, rtol=1e-10)
    assert math.isclose(float(ours.mean()), mean, rel_tol=1e-10)
    assert ours[0] > ours[1] > 0  # the verbatim reference scores highest


def test_corpus_document_frequencies_change_the_weights():
    refs = [[r.split() for r in REFS[i]] for i in sorted(REFS)]
    small = CiderD(refs)
    # Five more images whose captions all say "a dog": those n-grams become common, so they weigh less.
    big = CiderD(refs + [[f"a dog {w}".split()] for w in ("sleeps", "eats", "barks", "sits", "waits")])
    assert big.document_frequency[("dog",)] == small.document_frequency[("dog",)] + 5
    assert big.log_images == pytest.approx(math.log(9))
    candidate = ["a", "brown", "dog", "is", "running"]
    a, b = small.score([candidate], refs[:1])[0], big.score([candidate], refs[:1])[0]
    assert abs(a - b) > 0.01 * a  # 3.48 vs 3.34 here


def test_empty_references_score_zero_and_lengths_must_match():
    scorer = CiderD([[["a", "b"]]])
    np.testing.assert_array_equal(scorer.score([("a", "b"), ("a",)], [[("a", "b")], [()]]), [0.0, 0.0])
    with pytest.raises(ValueError, match="2 candidates but 1"):
        scorer.score([("a",), ("b",)], [[("a",)]])
    with pytest.raises(ValueError, match="at least one reference set"):
        CiderD([])


def test_token_ids_work_like_words():
    words = CiderD([[r.split() for r in REFS[i]] for i in sorted(REFS)])
    vocab = {w: k for k, w in enumerate(sorted({w for refs in REFS.values() for r in refs for w in r.split()}
                                               | set(" ".join(CANDIDATES.values()).split())))}
    ids = CiderD([[tuple(vocab[w] for w in r.split()) for r in REFS[i]] for i in sorted(REFS)])
    for i in sorted(REFS):
        a = words.score([CANDIDATES[i].split()], [[r.split() for r in REFS[i]]])
        b = ids.score([tuple(vocab[w] for w in CANDIDATES[i].split())],
                      [[tuple(vocab[w] for w in r.split()) for r in REFS[i]]])
        np.testing.assert_allclose(a, b)
