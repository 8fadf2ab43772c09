"""Self-critical sequence training (Rennie et al., CVPR 2017): REINFORCE on whole captions with a CIDEr-D reward.

After teacher forcing, the model is trained on what it is judged by: it samples K captions per image from its own
distribution, each gets the CIDEr-D reward r_k against that image's references (document frequencies from the
training split, `sat_tf.metrics.cider_d`), and the gradient of

    loss = -sum_{b,k} (r_bk - bbar_bk) * log p(c_bk | a) / N,      bbar_bk = mean_{j != k} r_bj

raises the probability of the captions that score above the other samples of the same image (the leave-one-out
baseline of Luo 2020 "A better variant of self-critical sequence training", unbiased and with no extra greedy
decode). N is the number of sampled tokens, as in the teacher-forced loss. Hard attention whose inference mode is
"sample" also samples its locations, and their log-probability joins the caption's: the reward then trains the
attention policy as well (the same REINFORCE estimator as paper eq. 12, with CIDEr-D instead of log p(y)).

Sampling and rescoring run without dropout, so the rescored log-probabilities are exactly those the samples were
drawn from. The reward runs in Python (`tf.py_function`): the step cannot be XLA-compiled or run on a TPU.

Shapes: B images, K samples per image, N = B*K rows, S sampled steps, R references per image, T reference tokens.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from sat_tf.decoding.beam_search import tile_beams
from sat_tf.metrics.cider_d import CiderD

TERMS = ("loss", "reward", "advantage_std", "sample_length")


def strip_tokens(row: np.ndarray, start_id: int, end_id: int, pad_id: int) -> tuple[int, ...]:
    """Token ids of one caption without <start>, <end> and padding: the words CIDEr-D compares."""
    out = []
    for token in row:
        token = int(token)
        if token == end_id:
            break
        if token not in (start_id, pad_id):
            out.append(token)
    return tuple(out)


def reference_sets(references: np.ndarray, start_id: int, end_id: int, pad_id: int) -> list[list[tuple]]:
    """(B, R, T) encoded references (rows of padding for images with fewer than R) -> per image, a list of
    token tuples."""
    out = []
    for image in references:
        refs = [strip_tokens(row, start_id, end_id, pad_id) for row in image]
        out.append([r for r in refs if r])
    return out


class SelfCritical:
    """The self-critical train step; set `captioner.self_critical = SelfCritical(...)` and call `fit` on
    {"annotations": (B, L, D), "references": (B, R, T)} image batches (`pipelines.dataset.image_batches`).

    Args:
        reward: CiderD with the training split's document frequencies.
        samples: int. K >= 2 captions sampled per image (the baseline is the mean of the other K - 1).
        max_length: int. Most tokens per sampled caption (the end token included).
        start_id, end_id, pad_id: special token ids.
    """

    def __init__(self, reward: CiderD, samples: int = 5, max_length: int = 20, *, start_id: int = 1,
                 end_id: int = 2, pad_id: int = 0):
        if samples < 2:
            raise ValueError(f"self-critical training needs at least 2 samples per image, got {samples}")
        self.reward, self.samples, self.max_length = reward, int(samples), int(max_length)
        self.start_id, self.end_id, self.pad_id = start_id, end_id, pad_id
        self.trackers = {name: keras.metrics.Mean(name=name) for name in TERMS}

    def rewards(self, tokens: np.ndarray, references: np.ndarray) -> np.ndarray:
        """CIDEr-D of every sampled row: tokens (B*K, S), references (B, R, T) -> (B*K,) float32."""
        refs = reference_sets(np.asarray(references), self.start_id, self.end_id, self.pad_id)
        k = self.samples
        candidates = [strip_tokens(row, self.start_id, self.end_id, self.pad_id) for row in np.asarray(tokens)]
        return self.reward.score(candidates, [refs[i // k] for i in range(len(candidates))]).astype(np.float32)

    def loss_terms(self, model, annotations, references, seed=None):
        """Samples, scores and rescores one batch; returns the loss (with gradient) and the logged terms."""
        cfg = model.model_config
        k = self.samples
        annotations = tf.convert_to_tensor(annotations)
        drawn = model.sample(annotations, k, self.max_length, seed=seed)
        tokens = tf.stop_gradient(drawn["tokens"])  # (N, S)
        longest = tf.reduce_max(drawn["lengths"])
        tokens = tokens[:, :longest]
        rewards = tf.py_function(self.rewards, [tokens, references], tf.float32)  # (N,)
        rewards = tf.reshape(rewards, [-1, k])  # (B, K)
        baseline = (tf.reduce_sum(rewards, axis=1, keepdims=True) - rewards) / (k - 1.0)  # (B, K) leave-one-out
        advantage = tf.reshape(rewards - baseline, [-1])  # (N,)
        inputs = tf.concat([tf.fill([tf.shape(tokens)[0], 1], cfg.start_id), tokens], axis=1)  # (N, S+1)
        locations = None
        if model.is_hard and cfg.hard_inference == "sample":
            locations = drawn["location"][:, :longest]  # (N, S)
        out = model.teacher_forcing(tile_beams(annotations, k), inputs, training=False, locations=locations)
        mask = out["mask"]  # (N, S)
        log_p = -tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"]) * mask  # (N, S)
        if locations is not None:
            log_p += out["log_prob"] * mask
        num_tokens = tf.maximum(tf.reduce_sum(mask), 1.0)
        loss = -tf.reduce_sum(advantage * tf.reduce_sum(log_p, axis=1)) / num_tokens
        terms = {"loss": loss, "reward": tf.reduce_mean(rewards), "advantage_std": tf.math.reduce_std(advantage),
                 "sample_length": tf.reduce_mean(tf.cast(drawn["lengths"], tf.float32))}
        return loss, terms

    def train_step(self, model, data):
        annotations, references = data["annotations"], data["references"]
        with tf.GradientTape() as tape:
            loss, terms = self.loss_terms(model, annotations, references)
            scaled = model.optimizer.scale_loss(loss) if hasattr(model.optimizer, "scale_loss") else loss
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        model.optimizer.apply(grads, variables)
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in terms}


def training_references(features_dir: str, split: str, *, manifest: dict | None = None,
                        vocabulary_checksum: str | None = None, start_id: int = 1, end_id: int = 2,
                        pad_id: int = 0) -> list[list[tuple]]:
    """Every image's encoded references of a split (token tuples), read from the feature shards, for the
    reward's document frequencies."""
    from sat_tf.pipelines.dataset import reference_dataset

    out = []
    for tokens in reference_dataset(features_dir, split, manifest=manifest,
                                    vocabulary_checksum=vocabulary_checksum).as_numpy_iterator():
        out.extend(reference_sets(tokens[None], start_id, end_id, pad_id))  # (1, N, T) -> one image's set
    return out
