"""CIDEr-D as a training reward: document frequencies fixed from a corpus, scores per candidate.

The coco-caption scorer (pycocoevalcap `Cider`, which is CIDEr-D: Vedantam et al. 2015, sec. 4 — tf-idf n-gram
vectors for n = 1..4, cosine similarity with the clipped hypothesis weights min(g_hyp, g_ref), the Gaussian length
penalty exp(-delta^2 / (2 sigma^2)) with sigma = 6, mean over n and over the references, times 10) takes the
document frequencies from the references of the sentences it is scoring. That is right for a test set, but a
self-critical training batch of 16 images would then define "rare" by 16 images. `CiderD` takes them once from a
whole corpus (the training split's references, as Rennie et al. 2017 did for SCST) and then scores any batch
against them; with the corpus equal to the scored set it reproduces pycocoevalcap exactly (tested).

Sentences are sequences of hashable tokens (words, or token ids: the reward works on ids directly). The length
used in the penalty is the number of bigrams, as in the reference implementation.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Iterable, Sequence

import numpy as np

Sentence = Sequence[Hashable]


def ngram_counts(sentence: Sentence, n: int = 4) -> Counter:
    """Counts of every 1..n-gram of a sentence (tuples of tokens)."""
    words = tuple(sentence)
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[words[i:i + k]] += 1
    return counts


class CiderD:
    """CIDEr-D with corpus-level document frequencies.

    Args:
        corpus: iterable of reference sets (one per image; each a list of sentences). df(g) is the number of images
            whose references contain the n-gram g; log(number of images) is the idf's numerator.
        n: int. Longest n-gram.
        sigma: float. Width of the Gaussian length penalty.
    """

    def __init__(self, corpus: Iterable[Sequence[Sentence]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        self.document_frequency: Counter = Counter()
        images = 0
        for references in corpus:
            images += 1
            seen = set()
            for ref in references:
                seen.update(ngram_counts(ref, n))
            self.document_frequency.update(seen)
        if images == 0:
            raise ValueError("CiderD needs at least one reference set to compute document frequencies")
        self.log_images = math.log(float(images))

    def _vector(self, sentence: Sentence):
        """tf-idf weights per n-gram order, their norms, and the bigram count (the length in the penalty)."""
        vec = [dict() for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for gram, tf in ngram_counts(sentence, self.n).items():
            order = len(gram) - 1
            weight = float(tf) * (self.log_images - math.log(max(1.0, self.document_frequency.get(gram, 0.0))))
            vec[order][gram] = weight
            norm[order] += weight * weight
            if order == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def _similarity(self, hyp, ref) -> float:
        (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
        penalty = math.exp(-((len_h - len_r) ** 2) / (2.0 * self.sigma ** 2))
        total = 0.0
        for order in range(self.n):
            dot = 0.0
            ref_order = vec_r[order]
            for gram, weight in vec_h[order].items():
                r = ref_order.get(gram)
                if r is not None:
                    dot += min(weight, r) * r
            if norm_h[order] != 0 and norm_r[order] != 0:
                dot /= norm_h[order] * norm_r[order]
            total += dot * penalty
        return total / self.n

    def score(self, candidates: Sequence[Sentence], references: Sequence[Sequence[Sentence]]) -> np.ndarray:
        """CIDEr-D of candidate i against references[i] (a list of sentences); (len(candidates),) float64 on the
        coco-caption scale (x10; multiply by 100 more for the paper's tables). Empty reference lists score 0."""
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
        out = np.zeros(len(candidates))
        cache: dict[int, list] = {}
        for i, (candidate, refs) in enumerate(zip(candidates, references)):
            refs = [r for r in refs if len(r)]
            if not refs:
                continue
            key = id(references[i])
            if key not in cache:  # a reference set shared by K samples of one image is vectorised once
                cache[key] = [self._vector(r) for r in refs]
            hyp = self._vector(candidate)
            out[i] = 10.0 * sum(self._similarity(hyp, r) for r in cache[key]) / len(refs)
        return out
