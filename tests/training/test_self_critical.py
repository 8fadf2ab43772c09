"""Self-critical training: the reward plumbing, the leave-one-out estimator, and that it raises CIDEr-D."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf.metrics.cider_d import CiderD
from sat_tf.models.captioner import Captioner
from sat_tf.training.self_critical import SelfCritical, reference_sets, strip_tokens

PAD, START, END, UNK = 0, 1, 2, 3
V, L, D = 16, 4, 8
# Four images, each with two references made of its own words (ids 4..15).
REFERENCES = np.array([
    [[START, 4, 5, 6, END, PAD], [START, 4, 5, 7, END, PAD]],
    [[START, 8, 9, END, PAD, PAD], [START, 8, 9, 10, END, PAD]],
    [[START, 11, 12, 13, END, PAD], [START, 11, 12, END, PAD, PAD]],
    [[START, 14, 15, END, PAD, PAD], [PAD, PAD, PAD, PAD, PAD, PAD]],  # an image with one reference
], "int32")


def test_strip_tokens_and_reference_sets():
    assert strip_tokens(np.array([START, 4, 5, END, 9, PAD]), START, END, PAD) == (4, 5)
    assert strip_tokens(np.array([4, 5, 6]), START, END, PAD) == (4, 5, 6)  # never ended
    refs = reference_sets(REFERENCES, START, END, PAD)
    assert refs[3] == [(14, 15)] and refs[0] == [(4, 5, 6), (4, 5, 7)]


def _setup(seed=0, lr=1e-2, samples=4):
    model = Captioner(vocab_size=V, feature_dim=D, embedding_dim=16, units=32, attention_dim=16, dropout=0.0,
                      seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    scorer = CiderD(reference_sets(REFERENCES, START, END, PAD))
    model.self_critical = SelfCritical(scorer, samples=samples, max_length=6)
    annotations = np.random.RandomState(seed).randn(4, L, D).astype("float32")
    return model, scorer, annotations


def _greedy_cider(model, scorer, annotations):
    tokens = model.generate(annotations, beam_size=1, max_length=6)["tokens"].numpy()
    candidates = [strip_tokens(row, START, END, PAD) for row in tokens]
    return scorer.score(candidates, reference_sets(REFERENCES, START, END, PAD)).mean()


def test_rewards_score_each_sample_against_its_own_image():
    model, scorer, _ = _setup(samples=2)
    tokens = np.array([[4, 5, 6, END], [8, 9, END, PAD], [8, 9, END, PAD], [4, 5, 6, END],
                       [11, 12, END, PAD], [4, END, PAD, PAD], [14, 15, END, PAD], [15, END, PAD, PAD]])
    r = model.self_critical.rewards(tokens, REFERENCES)
    assert r.shape == (8,) and r.dtype == np.float32
    assert r[0] > 1.0 and r[1] == 0.0  # sample 1 of image 0 uses image 1's words
    assert r[2] > 1.0 and r[3] == 0.0
    assert r[6] > r[7] > 0.0


def test_loss_is_the_leave_one_out_reinforce_estimate():
    model, scorer, annotations = _setup(samples=3)
    sc = model.self_critical
    seed = tf.constant([3, 9])
    loss, terms = sc.loss_terms(model, annotations, REFERENCES, seed=seed)
    # Recompute by hand from the same draws.
    drawn = model.sample(annotations, 3, 6, seed=seed)
    tokens = drawn["tokens"].numpy()
    r = sc.rewards(tokens, REFERENCES).reshape(4, 3)
    advantage = (r - (r.sum(1, keepdims=True) - r) / 2).reshape(-1)
    inputs = np.concatenate([np.full((12, 1), START), tokens], 1)
    out = model.teacher_forcing(np.repeat(annotations, 3, 0), inputs, training=False)
    log_p = -tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"]).numpy()
    mask = out["mask"].numpy()
    expected = -(advantage * (log_p * mask).sum(1)).sum() / mask.sum()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(terms["reward"]), r.mean(), rtol=1e-5)


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_self_critical_steps_raise_the_cider_of_sampled_and_greedy_captions(attention):
    model, scorer, annotations = _setup(seed=1)
    if attention == "hard":  # locations are sampled too and their log-probabilities join the estimator
        model = Captioner(vocab_size=V, feature_dim=D, embedding_dim=16, units=32, attention_dim=16, dropout=0.0,
                          seed=1, attention="hard", hard_inference="sample")
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.self_critical = SelfCritical(scorer, samples=4, max_length=6)
    before = _greedy_cider(model, scorer, annotations)
    ds = tf.data.Dataset.from_tensors({"annotations": annotations, "references": REFERENCES}).repeat(20)
    history = model.fit(ds, epochs=8, verbose=0).history
    assert set(history) == {"loss", "reward", "advantage_std", "sample_length"}
    rewards = history["reward"]  # per-epoch means of the sampled captions' CIDEr-D
    assert rewards[-1] > rewards[0] + 1.5 and rewards[-1] > 2.0, rewards
    if attention == "soft":
        after = _greedy_cider(model, scorer, annotations)
        assert before < 1.0 < 4.0 < after, (before, after)
