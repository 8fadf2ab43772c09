"""How noisy is hard attention's REINFORCE gradient? A direct measurement on real minibatches.

`python -m tools.reinforce_variance --workdir DIR [--batches 4] [--draws 16]` loads a hard-attention
work dir's model and, for a few training minibatches, redraws the attention locations `draws` times (dropout on,
as in training) and computes the gradient of the training loss each time, once per estimator:

    caption, moving average        the paper's: every step credited with log p(y|s,a) - b
    caption, no baseline           the same with b = 0 (the plain score-function estimator of paper eq. 11)
    caption, expected context      log p(y|s,a) - r(a, y) - b, r the caption's log-likelihood with the expected
                                   context (model.reinforce_baseline="expected_context")
    reward-to-go, moving average   step t credited with the log-likelihood of the words from t on, minus b per word
                                   (model.reinforce_signal="reward_to_go")
    reward-to-go, expected context the same minus the expected-context model's reward-to-go
    expected context (backprop)    xent with the soft, expected context (the other half of the paper's minibatches)

Every estimator with a baseline gets one fitted to it: b (and NVIL's v where the model uses it) is the minibatch's
own mean signal (per caption, or per word for reward-to-go), as on the first sampled minibatch of training, so
estimators are compared on equal terms whatever the model was trained with. It prints, per estimator, the norm of
the mean gradient ||g||, the total variance E||g_m - g||^2 of one draw and the signal-to-noise ratio
||g||^2 / E||g_m - g||^2 (how many draws it takes before the mean direction dominates; < 1 means a single
minibatch's gradient is mostly noise), plus, for the model's own estimator, the share of the gradient norm that
the REINFORCE term contributes, the attention entropy (nats, against log L for uniform) and the spread of the
advantage log p(y|s,a) - b. docs/results.md uses it to explain why hard attention trails soft.

Shapes: B captions, L locations, M draws, P parameters (flattened).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Sequence

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class EstimatorStats:
    """Gradient statistics of one estimator over M draws, averaged over minibatches."""

    name: str
    mean_norm: float  # ||mean_m g_m||
    variance: float  # mean_m ||g_m - mean g||^2
    snr: float  # mean_norm^2 / variance (inf for a deterministic estimator)


@dataclasses.dataclass
class VarianceReport:
    estimators: list[EstimatorStats]
    reinforce_share: float  # ||grad of the REINFORCE term|| / ||grad of the whole loss||, mean over draws
    entropy: float  # mean attention entropy per step (nats)
    max_entropy: float  # log L
    advantage_std: float  # std of log p(y|s,a) - b over captions and draws
    baseline: float
    batches: int
    draws: int

    def format_table(self) -> str:
        lines = ["| estimator | norm of mean gradient | variance of one draw | SNR (norm^2 / variance) |",
                 "|---|---|---|---|"]
        for s in self.estimators:
            snr = "inf" if math.isinf(s.snr) else f"{s.snr:.3g}"
            lines.append(f"| {s.name} | {s.mean_norm:.4f} | {s.variance:.4f} | {snr} |")
        lines.append("")
        lines.append(f"REINFORCE share of the gradient norm: {self.reinforce_share:.3f}; attention entropy "
                     f"{self.entropy:.3f} of max {self.max_entropy:.3f} nats; advantage std {self.advantage_std:.2f} "
                     f"(baseline {self.baseline:.2f}); {self.batches} minibatches x {self.draws} draws")
        return "\n".join(lines)


# name -> (reinforce_signal, reinforce_baseline); signal None = the expected context by backprop, baseline None =
# no baseline.
ESTIMATORS = {
    "caption, moving average": ("caption", "moving_average"),
    "caption, no baseline": ("caption", None),
    "caption, expected context": ("caption", "expected_context"),
    "reward-to-go, moving average": ("reward_to_go", "moving_average"),
    "reward-to-go, expected context": ("reward_to_go", "expected_context"),
    "expected context (backprop)": (None, None),
}


def _flat(grads) -> np.ndarray:
    return np.concatenate([np.asarray(tf.convert_to_tensor(g)).ravel() for g in grads if g is not None])


def measure(model, batches, draws: int = 16, seed: int = 0) -> VarianceReport:
    """The statistics of the module docstring for `model` (a hard-attention Captioner) over `batches`
    (iterable of {"annotations": (B, L, D), "tokens": (B, T+1)})."""
    if not model.is_hard:
        raise ValueError("reinforce_variance needs a hard-attention model (model.attention == 'hard')")
    variables = model.trainable_variables
    own = model.model_config
    saved = (model.baseline.numpy(), model.baseline_updates.numpy(),
             None if model.advantage_variance is None else model.advantage_variance.numpy())
    baseline = float(saved[0])
    own_name = (f"{'reward-to-go' if own.reinforce_signal == 'reward_to_go' else 'caption'}, "
                f"{own.reinforce_baseline.replace('_', ' ')}")
    per_estimator: dict[str, list[tuple[float, float]]] = {name: [] for name in ESTIMATORS}
    shares, entropies, advantages = [], [], []
    max_entropy = 0.0
    count = 0
    try:
        for b, batch in enumerate(batches):
            annotations, tokens = batch["annotations"], batch["tokens"]
            max_entropy = math.log(int(annotations.shape[1]))
            grads: dict[str, list[np.ndarray]] = {k: [] for k in per_estimator}
            references = {}
            for name, (signal, kind) in ESTIMATORS.items():
                model.model_config = dataclasses.replace(own, reinforce_signal=signal or own.reinforce_signal,
                                                         reinforce_baseline=kind or own.reinforce_baseline)
                references[name] = model.reinforce_reference(annotations, tokens, True)
            for m in range(draws):
                step_seed = tf.constant([seed + b, m], tf.int32)
                for name, (signal, kind) in ESTIMATORS.items():
                    model.model_config = dataclasses.replace(own, reinforce_signal=signal or own.reinforce_signal,
                                                             reinforce_baseline=kind or own.reinforce_baseline)
                    use_expected = tf.constant(signal is None)
                    # "no baseline": b = 0 used as is (updates > 0); otherwise the minibatch's own statistics.
                    model.baseline.assign(0.0)
                    model.baseline_updates.assign(1.0 if kind is None and signal else 0.0)
                    with tf.GradientTape(persistent=True) as tape:
                        out = model.teacher_forcing(annotations, tokens, training=True, seed=step_seed,
                                                    use_expected=use_expected)
                        terms = model.loss_terms(out, sampled=tf.logical_not(use_expected),
                                                 reference=references[name])
                    grads[name].append(_flat(tape.gradient(terms["loss"], variables)))
                    if name == own_name:
                        full = np.linalg.norm(grads[name][-1])
                        rf = _flat(tape.gradient(terms["reinforce"], variables))
                        shares.append(float(np.linalg.norm(rf) / max(full, 1e-12)))
                        entropies.append(float(tf.reduce_sum(out["entropy"] * out["mask"])
                                               / tf.reduce_sum(out["mask"])))
                        token_log_p = -tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"])
                        log_p_y = tf.reduce_sum(token_log_p * out["mask"], axis=1).numpy()
                        reference = references[name]
                        if reference is not None:
                            reference = reference.numpy()
                            log_p_y = log_p_y - (reference[:, 0] if reference.ndim == 2 else reference)
                        advantages.extend((log_p_y - log_p_y.mean()).tolist())
                    del tape
            for name, gs in grads.items():
                g = np.stack(gs)  # (M, P)
                mean = g.mean(axis=0)
                variance = float(np.mean(np.sum((g - mean) ** 2, axis=1)))
                per_estimator[name].append((float(np.linalg.norm(mean)), variance))
            count += 1
    finally:
        model.model_config = own
        model.baseline.assign(saved[0])
        model.baseline_updates.assign(saved[1])
        if saved[2] is not None:
            model.advantage_variance.assign(saved[2])
    if count == 0:
        raise ValueError("no minibatches to measure")
    stats = []
    for name, values in per_estimator.items():
        norm = float(np.mean([v[0] for v in values]))
        variance = float(np.mean([v[1] for v in values]))
        snr = float(np.mean([v[0] ** 2 / v[1] if v[1] > 0 else math.inf for v in values]))
        stats.append(EstimatorStats(name, norm, variance, snr))
    return VarianceReport(stats, float(np.mean(shares)), float(np.mean(entropies)), max_entropy,
                          float(np.std(advantages)), baseline, count, draws)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.reinforce_variance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--which", default="best", help="checkpoint: best, latest, or a checkpoint path prefix")
    p.add_argument("--batches", type=int, default=4, help="training minibatches to measure on")
    p.add_argument("--draws", type=int, default=16, help="location draws per minibatch")
    p.add_argument("--batch-size", type=int, default=0, help="captions per minibatch (default: the work dir's)")
    args = p.parse_args(argv)

    from sat_tf.pipelines.dataset import training_dataset
    from sat_tf.pipelines.manifest import load_manifest
    from sat_tf.training.workdir import load_captioner

    try:
        experiment = load_captioner(args.workdir, args.which)
        manifest = load_manifest(experiment.features_dir)
        ds = training_dataset(experiment.features_dir, args.batch_size or experiment.train_config.batch_size,
                              split=experiment.data_config.train_split, seed=experiment.train_config.seed,
                              manifest=manifest, vocabulary_checksum=experiment.vocabulary.checksum(), verify="size")
        report = measure(experiment.captioner, ds.take(args.batches), draws=args.draws)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{experiment.checkpoint_path}: REINFORCE gradient statistics")
    print(report.format_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
