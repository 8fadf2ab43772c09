"""The Show, Attend and Tell captioner: teacher-forced training, REINFORCE for hard attention, decoding.

The Captioner sees annotations (B, L, D) and token ids (B, T+1) = <start> w_1 ... w_n <end> <pad>...; it knows
nothing of files, images or tokenisers.

Losses (all sums over real tokens are divided by the number of real tokens N in the minibatch, so padding
contributes nothing and `xent` is the usual per-token cross-entropy):
    xent      = -sum_{b,t} log p(y_bt | ...) / N
    alpha_reg = lambda * mean_{b,i} (1 - sum_t alpha_bti)^2      the doubly stochastic penalty (eq. 14), averaged
                over locations instead of summed so that lambda = 1 suits a per-token cross-entropy
    hard only (eq. 11-12), with R_b = log p(y_b | s_b, a) = sum_t log p(y_bt) and b the moving-average baseline:
    reinforce = -lambda_r * sum_b stop_grad(R_b - r_b - b) / c * log p(s_b | a) / N
    r_b = 0 (the paper), or with `reinforce_baseline="expected_context"` the log-likelihood of caption b with the
    expected context at every step (no dropout, no gradient); b is then the moving average of R_b - r_b
    c = 1, or with `advantage_normalization` max(1, sqrt(v)), v the moving average of mean_b (R_b - r_b - b)^2 before
    this minibatch (NVIL's variance normalisation; a positive per-step scale, so the estimate stays unbiased
    up to that scale)
    with `reinforce_signal="reward_to_go"` step t is credited with the words it can still affect instead:
    reinforce = -lambda_r * sum_{b,t} stop_grad(G_bt - r_bt - b n_bt) / c * log p(s_bt | s_b<t, a) / N
    G_bt = sum_{t' >= t} log p(y_bt'), r_bt the same under the expected context (or 0), n_bt the words from t on
    and b the moving average of the per-word signal (c from the per-word mean square)
    entropy   = -lambda_e * sum_{b,t} H[s_bt] / N
    with `expected_context_warmup_steps` W > 0 the probability of a minibatch using the expected context is
    p + (1 - p) max(0, 1 - step / W) (1 at step 0, p = `expected_context_prob` from step W on)
The gradient of xent + reinforce is the paper's Monte-Carlo estimate of the gradient of the lower bound L_s
(divided by N); tests/models/test_reinforce.py checks that every estimator is unbiased by exact enumeration.

Shapes: B batch, L locations, D depth, T steps, V vocabulary, H units, E embedding, K beams, S max length.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from sat_tf.config import ModelConfig
from sat_tf.decoding import compiled
from sat_tf.decoding.beam_search import NEG_INF, beam_search, greedy_search, tile_beams
from sat_tf.layers.attention_lstm_cell import AttentionLSTMCell
from sat_tf.layers.soft_attention import SharedAnnotations
from sat_tf.models.distributed_fit import (SymbolicBuildFree, fit_logs, global_counts, global_gradients,
                                           global_sum)

SOFT_TERMS = ("loss", "xent", "alpha_reg", "perplexity")
HARD_TERMS = SOFT_TERMS + ("reinforce", "entropy", "baseline")
# Terms a replica computes as its share of the global-batch value (summed over replicas to report them).
REPLICA_SHARES = ("loss", "xent", "alpha_reg", "reinforce", "entropy")
PREDICT_MAX_LENGTH = 20  # tokens of a caption from `predict`
# Salt of the stateless seeds drawn from the step counter (hard attention's coin and locations).
_STEP_SEED_SALT = 0x5A7


@keras.saving.register_keras_serializable(package="sat_tf")
class Captioner(SymbolicBuildFree, keras.Model):
    """Encoder-agnostic attention captioner (paper sec. 3) with soft or hard attention (sec. 4).

    Build it from a `ModelConfig` with `Captioner.from_model_config(config)`; the constructor takes the same
    fields as plain keyword arguments so that Keras can serialise it.

    Args:
        vocab_size, feature_dim, embedding_dim, units, attention_dim, attention, gate, dropout,
        alpha_regularization, reinforce_weight, entropy_weight, baseline_decay, advantage_normalization,
        reinforce_baseline, reinforce_signal, expected_context_prob, expected_context_warmup_steps, hard_inference, pad_id, start_id, end_id, unk_id: see
        `sat_tf.config.ModelConfig`.
        seed: int or None. Seeds dropout, hard-attention sampling and the expected-context coin.
        unroll_steps: int. Teacher forcing of captions with up to this many steps runs as an unrolled graph
            (much faster on CPU, see benchmarks/README.md); 0 uses a tf.while_loop for any length. Captions with
            a static length are always unrolled.
    """

    def __init__(self, vocab_size: int = 10000, feature_dim: int = 512, embedding_dim: int = 512, units: int = 512,
                 attention_dim: int = 512, attention: str = "soft", gate: str = "scalar", dropout: float = 0.5,
                 alpha_regularization: float = 1.0, reinforce_weight: float = 1.0, entropy_weight: float = 0.002,
                 baseline_decay: float = 0.9, advantage_normalization: bool = False,
                 reinforce_baseline: str = "moving_average", reinforce_signal: str = "caption",
                 expected_context_prob: float = 0.5,
                 expected_context_warmup_steps: int = 0, hard_inference: str = "expected",
                 pad_id: int = 0, start_id: int = 1, end_id: int = 2, unk_id: int = 3, seed: int | None = None,
                 unroll_steps: int = 32, **kwargs):
        super().__init__(**kwargs)
        # Validates every field with the same rules as the dataclass.
        self.model_config = ModelConfig(
            vocab_size=vocab_size, feature_dim=feature_dim, embedding_dim=embedding_dim, units=units,
            attention_dim=attention_dim, attention=attention, gate=gate, dropout=dropout,
            alpha_regularization=alpha_regularization, reinforce_weight=reinforce_weight,
            entropy_weight=entropy_weight, baseline_decay=baseline_decay,
            advantage_normalization=bool(advantage_normalization), reinforce_baseline=reinforce_baseline,
            reinforce_signal=reinforce_signal, expected_context_prob=expected_context_prob,
            expected_context_warmup_steps=int(expected_context_warmup_steps),
            hard_inference=hard_inference, pad_id=pad_id, start_id=start_id, end_id=end_id, unk_id=unk_id)
        self.seed = seed
        self.unroll_steps = int(unroll_steps)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")  # E
        self.cell = AttentionLSTMCell(
            units=units, vocab_size=vocab_size, embedding_dim=embedding_dim, feature_dim=feature_dim,
            attention_dim=attention_dim, attention=attention, gate=gate, dropout=dropout,
            expected_context_prob=expected_context_prob, hard_inference=hard_inference, seed=seed, name="decoder")
        self.embedding.build((None, None))
        self.cell.build()
        # REINFORCE baseline b and the number of updates it has seen; non-trainable so they checkpoint.
        self.baseline = self.add_weight(shape=(), initializer="zeros", trainable=False, name="baseline")
        self.baseline_updates = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                                name="baseline_updates")
        # v of `advantage_normalization`; created only then, so older checkpoints keep their exact structure.
        self.advantage_variance = None
        if attention == "hard" and advantage_normalization:
            self.advantage_variance = self.add_weight(shape=(), initializer="ones", trainable=False,
                                                      name="advantage_variance")
        self.seed_generator = keras.random.SeedGenerator(seed)
        terms = HARD_TERMS if attention == "hard" else SOFT_TERMS
        if self.advantage_variance is not None:
            terms += ("advantage_variance",)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in terms}
        self._decoders = {}
        self.built = True

    @classmethod
    def from_model_config(cls, config: ModelConfig, seed: int | None = None, **kwargs) -> "Captioner":
        return cls(**vars(config), seed=seed, **kwargs)

    @property
    def is_hard(self) -> bool:
        return self.model_config.attention == "hard"

    # -- teacher forcing ------------------------------------------------------------------------------------

    def teacher_forcing(self, annotations, tokens, training=False, seed=None, use_expected=None, locations=None,
                        sample_rows=None, hard_mode=None):
        """Runs the decoder over a known caption.

        Args:
            annotations: (B, L, D) float.
            tokens: (B, T+1) int, <start> ... <end> then padding.
            training: enables dropout and (hard attention) sampling.
            seed: int32 (2,) stateless seed for hard-attention sampling (drawn from the model if None).
            use_expected: bool scalar, hard attention in training: use the expected context this minibatch.
            locations: optional (B, T) int32, hard attention: force these locations instead of sampling (used to
                enumerate the lower bound exactly in tests and to score a given attention path).
            sample_rows: optional (offset, total) int scalars, hard attention in training: this batch is rows
                offset .. offset + B - 1 of a global batch of `total` rows (`sat_tf.models.distributed_fit`), and
                row b's locations are drawn as row offset + b of the global batch would be, so a global batch split
                across replicas samples exactly what one process samples on all of it. None: rows 0 .. B - 1 of B.
            hard_mode: optional str, hard attention: how z_t is chosen ("expected", "argmax", "sample"), instead
                of sampling in training and `hard_inference` otherwise.

        Returns:
            dict: `logits` (B, T, V) float32, `alpha` (B, T, L), `targets` (B, T), `mask` (B, T) float32, and for
            hard attention `location` (B, T), `log_prob` (B, T) = log alpha_{t, s_t}, `entropy` (B, T).
        """
        annotations = tf.convert_to_tensor(annotations)
        annotations = tf.cast(annotations, self.cell.compute_dtype)
        tokens = tf.cast(tokens, tf.int32)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T)
        embedded = self.embedding(inputs)  # (B, T, E)
        projected_inputs = tf.transpose(self.cell.project_inputs(embedded), [1, 0, 2])  # (T, B, 4H)
        h, c = self.cell.initial_state(annotations)  # (B, H) each
        projected = self.cell.prepare(annotations)  # (B, L, A)
        kernel = self.cell.recurrent_kernel()  # (H, A + G + 4H)
        steps = tf.shape(projected_inputs)[0]

        mode = "expected"
        if self.is_hard:
            mode = hard_mode or ("sample" if training else self.model_config.hard_inference)
            if locations is not None:
                mode = "given"
            if seed is None and mode == "sample":
                seed = tf.cast(self.seed_generator.next(), tf.int32)
        if locations is not None:
            locations = tf.transpose(tf.cast(locations, tf.int32))  # (T, B)

        names = ["h", "context", "alpha"] + (["location", "log_prob", "entropy"] if self.is_hard else [])

        def one_step(t, x, h, c):
            step_seed = tf.random.experimental.stateless_fold_in(seed, t) if mode == "sample" else None
            location = locations[t] if mode == "given" else None
            h, c, extras = self.cell.step(x, [h, c], annotations, projected, kernel, mode=mode, seed=step_seed,
                                          use_expected=use_expected, location=location, rows=sample_rows)
            extras["h"] = h
            return h, c, extras

        static_steps = projected_inputs.shape[0]
        unrolled = static_steps if static_steps is not None else self.unroll_steps
        if unrolled:
            # A straight-line graph instead of a tf.while_loop: TF then keeps each step's intermediates as plain
            # tensors instead of pushing them onto loop accumulators, and overlaps independent ops of
            # neighbouring steps; measured 2.3x faster per train step (benchmarks/README.md). With a dynamic
            # caption length each step sits in a tf.cond, so one trace serves every length up to `unroll_steps`.
            if static_steps is None:
                check = tf.debugging.assert_less_equal(
                    steps, unrolled, message=f"caption longer than the Captioner's unroll_steps={unrolled}: "
                                             f"raise unroll_steps, or set it to 0 for a tf.while_loop")
                # Every output is sliced by `steps`: tying it to the check makes the check fail first, always
                # (otherwise a shape error downstream may win the race and hide the clear message).
                with tf.control_dependencies([check] if check is not None else []):
                    steps = tf.identity(steps)
            batch = tf.shape(annotations)[0]
            zeros = {"h": tf.zeros([batch, self.model_config.units], self.cell.compute_dtype),
                     "context": tf.zeros([batch, self.model_config.feature_dim], self.cell.compute_dtype),
                     "alpha": tf.zeros(tf.shape(annotations)[:2], self.cell.compute_dtype),
                     "location": tf.zeros([batch], tf.int32),
                     "log_prob": tf.zeros([batch], tf.float32),  # float32 in any policy: REINFORCE's terms
                     "entropy": tf.zeros([batch], tf.float32)}
            collected = {n: [] for n in names}
            for t in range(unrolled):
                if static_steps is not None:
                    h, c, extras = one_step(tf.constant(t), projected_inputs[t], h, c)
                else:
                    def run(t=t, h=h, c=c):
                        h, c, extras = one_step(tf.constant(t), projected_inputs[t], h, c)
                        return h, c, {n: tf.cast(extras[n], zeros[n].dtype) for n in names}

                    def skip(h=h, c=c):
                        return h, c, {n: zeros[n] for n in names}

                    h, c, extras = tf.cond(t < steps, run, skip)
                for n in names:
                    collected[n].append(extras[n])
            out = {n: tf.stack(collected[n], axis=1)[:, :steps] for n in names}  # (B, T, ...)
        else:
            dtypes = {"location": tf.int32, "log_prob": tf.float32, "entropy": tf.float32}
            arrays = {n: tf.TensorArray(dtypes.get(n, self.cell.compute_dtype), size=steps) for n in names}
            inputs_ta = tf.TensorArray(projected_inputs.dtype, size=steps).unstack(projected_inputs)

            def body(t, h, c, arrays):
                h, c, extras = one_step(t, inputs_ta.read(t), h, c)
                arrays = {n: arrays[n].write(t, tf.cast(extras[n], arrays[n].dtype)) for n in names}
                return t + 1, h, c, arrays

            _, _, _, arrays = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), h, c, arrays),
                                            maximum_iterations=steps)  # XLA needs the bound
            out = {n: _batch_major(arrays[n].stack()) for n in names}  # (B, T, ...)
        logits = self.cell.output_logits(embedded, out["h"], out["context"], training=training)  # (B, T, V)
        result = {"logits": tf.cast(logits, tf.float32), "alpha": tf.cast(out["alpha"], tf.float32),
                  "targets": targets, "mask": tf.cast(tf.not_equal(targets, self.model_config.pad_id), tf.float32)}
        if self.is_hard:
            result.update(location=out["location"], log_prob=tf.cast(out["log_prob"], tf.float32),
                          entropy=tf.cast(out["entropy"], tf.float32))
        return result

    def call(self, inputs, training=False):
        """Teacher forcing, the model's Keras call: {"annotations": (B, L, D), "tokens": (B, T+1)} -> {"logits"
        (B, T, V), "alpha" (B, T, L)} (`teacher_forcing` gives every other output too). Captions come from
        `predict` (greedy) and `generate` (beam search)."""
        annotations, tokens = _unpack(inputs)
        out = self.teacher_forcing(annotations, tokens, training=training)
        return {"logits": out["logits"], "alpha": out["alpha"]}

    def predict_step(self, data):
        """`model.predict(annotations)`: greedy captions of (B, L, D) annotations (or {"annotations": ...}
        batches), at most `PREDICT_MAX_LENGTH` tokens, <unk> suppressed: a dict of `tokens` (B, S) (the end token
        included, then padding), `lengths` (B,), `log_probs` (B,), `alpha` (B, S, L) and for hard attention
        `location` (B, S). Use `generate` for beam search and other settings, `call` / `teacher_forcing` for the
        teacher-forced logits of given captions."""
        if isinstance(data, (tuple, list)):
            data = data[0]
        annotations = data["annotations"] if isinstance(data, dict) else data
        return self.decode(annotations, beam_size=1, max_length=PREDICT_MAX_LENGTH)

    def compile(self, optimizer="adam", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                **kwargs):
        """Keras' `compile` with an optimizer only: the Captioner computes its own loss terms (ModelConfig
        weights them) and reports each as a metric, so a `loss`, `loss_weights`, `metrics` or
        `weighted_metrics` would be silently unused; they are refused by name."""
        given = {"loss": loss, "loss_weights": loss_weights, "metrics": metrics,
                 "weighted_metrics": weighted_metrics}
        for name, value in given.items():
            if value is not None:
                raise ValueError(f"Captioner.compile({name}={value!r}): the Captioner computes its own losses "
                                 f"(xent, alpha_reg and for hard attention reinforce and entropy, weighted by "
                                 f"ModelConfig) and reports them as metrics; compile it with an optimizer only")
        super().compile(optimizer=optimizer, **kwargs)

    # -- losses ---------------------------------------------------------------------------------------------

    def loss_terms(self, out, sampled=False, num_tokens=None, num_captions=None, batch_mean=None, reference=None):
        """Every loss term of the module docstring from `teacher_forcing` outputs.

        Args:
            out: dict from `teacher_forcing`.
            sampled: bool or bool scalar tensor. Hard attention drew its locations in this pass, so the REINFORCE
                term applies and `baseline` in the result is the moving average after this minibatch; otherwise
                the REINFORCE term is zero and the baseline is unchanged.
            num_tokens: optional float scalar, N: the real-token count of the whole (global) batch.
            num_captions: optional float scalar: the caption count of the whole batch (alpha_reg's mean).
            batch_mean: optional callable (B,) -> scalar: the mean of per-caption values over the whole batch
                (the REINFORCE baseline's statistic); it only sees stop-gradient values.
            With the three set to global-batch values, the terms of one replica are its share: summed over
            replicas they are the single-process terms of the global batch (`perplexity` and `baseline` excepted:
            take exp of the summed xent; the baseline is the same on every replica). None: this batch's own.
            reference: optional (B,) float, r_b of the module docstring (`reinforce_reference`); None: r_b = 0.
        """
        cfg = self.model_config
        mask = out["mask"]  # (B, T)
        if num_tokens is None:
            num_tokens = tf.reduce_sum(mask)
        num_tokens = tf.maximum(tf.cast(num_tokens, tf.float32), 1.0)
        if batch_mean is None:
            batch_mean = tf.reduce_mean
        token_log_p = -tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"])  # (B, T)
        token_log_p *= mask
        xent = -tf.reduce_sum(token_log_p) / num_tokens
        coverage = tf.reduce_sum(out["alpha"] * mask[:, :, None], axis=1)  # (B, L)
        if num_captions is None:
            penalty = tf.reduce_mean(tf.square(1.0 - coverage))
        else:
            locations = tf.cast(tf.shape(coverage)[1], tf.float32)
            penalty = tf.reduce_sum(tf.square(1.0 - coverage)) / (
                tf.maximum(tf.cast(num_captions, tf.float32), 1.0) * locations)
        alpha_reg = cfg.alpha_regularization * penalty
        terms = {"loss": xent + alpha_reg, "xent": xent, "alpha_reg": alpha_reg, "perplexity": tf.exp(xent)}
        if self.is_hard:
            sampled = tf.convert_to_tensor(sampled, tf.bool)
            per_step = cfg.reinforce_signal == "reward_to_go"
            if per_step:
                signal = reward_to_go(token_log_p)  # (B, T) sum_{t' >= t} log p(y_bt')
                scale = reward_to_go(mask)  # (B, T) the words from t on: the baseline's per-word multiplier
            else:
                signal = tf.reduce_sum(token_log_p, axis=1)  # (B,) R_b = log p(y_b | s_b, a)
                scale = tf.ones_like(signal)  # (B,)
            signal = tf.stop_gradient(signal)  # R_b, or R_b - r_b (per step with reward-to-go)
            if reference is not None:
                signal -= tf.stop_gradient(tf.cast(reference, signal.dtype))
            # b's statistic: the mean caption signal, or with reward-to-go the mean signal per word (first step's
            # reward-to-go is the whole caption's). The first sampled minibatch starts the average at its own mean.
            mean_signal = batch_mean(signal[:, 0]) / batch_mean(scale[:, 0]) if per_step else batch_mean(signal)
            b = tf.where(self.baseline_updates > 0, self.baseline, mean_signal)
            advantage = signal - b * scale  # (B,) or (B, T)
            if per_step:
                advantage *= mask
            if self.advantage_variance is not None:
                square = tf.square(advantage)
                if per_step:  # a caption's mean over its words
                    square = tf.reduce_sum(square, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
                mean_square = batch_mean(square)
                v = tf.where(self.baseline_updates > 0, self.advantage_variance, mean_square)
                advantage = advantage / tf.maximum(1.0, tf.sqrt(v))
                new_v = cfg.baseline_decay * v + (1.0 - cfg.baseline_decay) * mean_square
                terms["advantage_variance"] = tf.where(sampled, new_v, tf.identity(self.advantage_variance))
            log_prob = out["log_prob"] * mask  # (B, T) log p(s_bt | s_b<t, a)
            if per_step:
                credited = tf.reduce_sum(advantage * log_prob)
            else:
                credited = tf.reduce_sum(advantage * tf.reduce_sum(log_prob, axis=1))  # log p(s_b | a)
            reinforce = -cfg.reinforce_weight * credited / num_tokens
            reinforce *= tf.cast(sampled, reinforce.dtype)
            entropy = tf.reduce_sum(out["entropy"] * mask) / num_tokens
            terms["loss"] += reinforce - cfg.entropy_weight * entropy
            new_b = cfg.baseline_decay * b + (1.0 - cfg.baseline_decay) * mean_signal
            terms.update(reinforce=reinforce, entropy=entropy,
                         baseline=tf.where(sampled, new_b, tf.identity(self.baseline)))
        return terms

    def train_step(self, data):
        """One update on a (replica) batch; replica-correct under any tf.distribute strategy (the losses divide by
        the global batch's token and caption counts, the REINFORCE baseline statistic is the global batch mean, the
        gradient is clipped as a whole: `sat_tf.models.distributed_fit`). Hard attention's coin and locations come
        from a stateless seed of `seed` and the optimizer's step counter, the same on every replica and after a
        resume."""
        annotations, tokens = _unpack(data)
        tokens = tf.cast(tokens, tf.int32)
        mask = tf.cast(tf.not_equal(tokens[:, 1:], self.model_config.pad_id), tf.float32)  # (B, T)
        offset, num_captions, num_tokens = global_counts(tf.shape(tokens)[0], tf.reduce_sum(mask))
        use_expected, seed, sampled = None, None, False
        if self.is_hard:
            coin_seed, seed = tf.unstack(tf.random.experimental.stateless_split(self.step_seed(), 2))
            use_expected = self.cell.attention.draw_expected_coin(  # one coin for the global batch
                coin_seed, self.expected_context_probability())
            sampled = tf.logical_not(use_expected)
        reference = self.reinforce_reference(annotations, tokens, sampled)  # per row: no collective needed
        with tf.GradientTape() as tape:

            def batch_mean(values):  # (B,) stop-gradient values -> their mean over the global batch
                with tape.stop_recording():  # no gradient (another all-reduce) is built for it
                    return global_sum(tf.reduce_sum(values)) / tf.maximum(num_captions, 1.0)

            out = self.teacher_forcing(annotations, tokens, training=True, seed=seed, use_expected=use_expected,
                                       sample_rows=(offset, tf.cast(num_captions, tf.int32)))
            terms = self.loss_terms(out, sampled=sampled, num_tokens=num_tokens, num_captions=num_captions,
                                    batch_mean=batch_mean, reference=reference)
            loss = self.optimizer.scale_loss(terms["loss"])
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply(global_gradients(grads, self.optimizer), variables)
        if self.is_hard:
            # The same values on every replica (global statistic, shared coin): the mirrors stay equal.
            self.update_baseline(terms, sampled)
        shares = [name for name in REPLICA_SHARES if name in terms]
        totals = global_sum([terms[name] for name in shares])
        report = dict(terms, **dict(zip(shares, totals)))
        report["perplexity"] = tf.exp(report["xent"])
        return fit_logs(self._report(report))

    def expected_context_probability(self):
        """float32 scalar: this step's probability of the expected context, `expected_context_prob` after
        `expected_context_warmup_steps` (ModelConfig), from 1 at step 0 linearly down to it before."""
        cfg = self.model_config
        final = tf.constant(cfg.expected_context_prob, tf.float32)
        if not cfg.expected_context_warmup_steps:
            return final
        progress = tf.cast(self.optimizer.iterations, tf.float32) / float(cfg.expected_context_warmup_steps)
        return final + (1.0 - final) * tf.maximum(0.0, 1.0 - progress)

    def step_seed(self):
        """int32 (2,) stateless seed of the current training step: `seed` folded with the optimizer's step
        counter (checkpointed, and the same on every replica)."""
        base = tf.constant([self.seed or 0, _STEP_SEED_SALT], tf.int32)
        return tf.random.experimental.stateless_fold_in(base, self.optimizer.iterations.value)

    def reinforce_reference(self, annotations, tokens, sampled):
        """r_b of the module docstring: float32 log p(y_b | a, expected context) without dropout or gradient, (B,)
        for the whole caption or (B, T) its reward-to-go with `reinforce_signal="reward_to_go"`, computed only when
        `sampled` (zeros otherwise: the REINFORCE term is off then); None unless hard attention with
        `reinforce_baseline="expected_context"`."""
        if not self.is_hard or self.model_config.reinforce_baseline != "expected_context":
            return None
        per_step = self.model_config.reinforce_signal == "reward_to_go"

        def log_likelihood():
            out = self.teacher_forcing(annotations, tokens, training=False, hard_mode="expected")
            token_log_p = -tf.nn.sparse_softmax_cross_entropy_with_logits(out["targets"], out["logits"])  # (B, T)
            token_log_p *= out["mask"]
            return tf.stop_gradient(reward_to_go(token_log_p) if per_step else tf.reduce_sum(token_log_p, axis=1))

        shape = tf.shape(tokens[:, 1:]) if per_step else [tf.shape(tokens)[0]]
        return tf.cond(tf.convert_to_tensor(sampled, tf.bool), log_likelihood, lambda: tf.zeros(shape, tf.float32))

    def update_baseline(self, terms, sampled):
        """After the update of a minibatch: stores the REINFORCE statistics of `loss_terms(out, sampled)`, which
        already hold the unchanged values when the minibatch did not sample, and counts sampled minibatches."""
        self.baseline.assign(terms["baseline"])
        if self.advantage_variance is not None:
            self.advantage_variance.assign(terms["advantage_variance"])
        self.baseline_updates.assign_add(tf.cast(sampled, self.baseline_updates.dtype))

    def test_step(self, data):
        annotations, tokens = _unpack(data)
        out = self.teacher_forcing(annotations, tokens, training=False)
        return self._report(self.loss_terms(out))

    def _report(self, terms):
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in terms}

    @property
    def metrics(self):
        return list(self.trackers.values())

    # -- decoding -------------------------------------------------------------------------------------------

    def decode_step_fn(self, annotations, beam_size: int = 1, seed=None, suppress_unk: bool = True,
                       mode: str | None = None):
        """(initial state, step_fn) for `sat_tf.decoding` over B images x K beams.

        annotations: (B, L, D); rows b*K .. b*K + K-1 decode image b and attend one shared copy of its
        annotations (`SharedAnnotations`). The step function maps tokens (B*K,) and state [h, c] to log-probs
        (B*K, V) and records `alpha` (B*K, L) (and `location` (B*K,) for hard attention). <pad> and <start> are
        never emitted; with `suppress_unk` neither is <unk> (no reference contains it, so an <unk> is always a miss;
        the remaining words are renormalised, as if <unk> were not in the vocabulary).
        """
        state, images, step_fn = self.decode_image_step_fn(annotations, beam_size, seed, suppress_unk, mode)
        return state, lambda tokens, state, t: step_fn(tokens, state, t, images)

    def decode_image_step_fn(self, annotations, beam_size: int = 1, seed=None, suppress_unk: bool = True,
                             mode: str | None = None):
        """`decode_step_fn` with the per-image tensors it reads made explicit, so that beam search can drop the
        images whose search has ended (`beam_search(..., images=)`): returns (initial state [h, c] (B*K, H) each,
        images (annotations (B, L, D), W_a a + b (B, L, A)), step_fn(tokens, state, t, images)), where `images`
        passed to step_fn holds the rows of any subset of the B images, in the order of the state's rows."""
        cfg = self.model_config
        annotations = tf.cast(tf.convert_to_tensor(annotations), self.cell.compute_dtype)
        h, c = self.cell.initial_state(annotations)  # (B, H)
        projected = self.cell.prepare(annotations)  # (B, L, A)
        if beam_size > 1:
            h, c = (tile_beams(x, beam_size) for x in (h, c))  # (B*K, H)
        kernel = self.cell.recurrent_kernel()
        mode = (mode or cfg.hard_inference) if self.is_hard else "expected"
        logit_mask = self.decode_logit_mask(suppress_unk)  # (V,)

        def step_fn(tokens, state, t, images):
            annotations, projected = images  # (B', L, D), (B', L, A)
            if beam_size > 1:
                # The K rows of an image share one copy of its annotations and W_a a + b instead of K repeated ones.
                annotations = SharedAnnotations(annotations)
            embedded = self.embedding(tokens)  # (N, E)
            step_seed = tf.random.experimental.stateless_fold_in(seed, t) if mode == "sample" else None
            h, c, extras = self.cell.step(self.cell.project_inputs(embedded), state, annotations, projected, kernel,
                                          mode=mode, seed=step_seed)
            logits = self.cell.output_logits(embedded, h, extras["context"], training=False)  # (N, V)
            records = {"alpha": tf.cast(extras["alpha"], tf.float32)}
            if self.is_hard:
                records["location"] = extras["location"]
            return tf.nn.log_softmax(tf.cast(logits, tf.float32) + logit_mask), [h, c], records

        return [h, c], (annotations, projected), step_fn

    def decode(self, annotations, beam_size: int = 1, max_length: int = 20, length_penalty: float = 0.0,
               seed=None, suppress_unk: bool = True, min_length: int = 0, no_repeat_ngram_size: int = 0):
        """Graph-mode-friendly batched decoding (greedy when beam_size == 1); see `generate`. Beam search drops
        each image from the batch once its K beams have ended (`beam_search(..., images=)`)."""
        cfg = self.model_config
        if self.is_hard and cfg.hard_inference == "sample" and seed is None:
            seed = tf.cast(self.seed_generator.next(), tf.int32)
        batch = tf.shape(annotations)[0]
        if beam_size == 1:
            state, step_fn = self.decode_step_fn(annotations, beam_size, seed, suppress_unk=suppress_unk)
            return greedy_search(step_fn, state, batch, max_length, cfg.start_id, cfg.end_id, cfg.pad_id,
                                 min_length=min_length, no_repeat_ngram_size=no_repeat_ngram_size)
        state, images, step_fn = self.decode_image_step_fn(annotations, beam_size, seed, suppress_unk=suppress_unk)
        return beam_search(step_fn, state, batch, beam_size, max_length, cfg.start_id, cfg.end_id, cfg.pad_id,
                           length_penalty, images=images, min_length=min_length,
                           no_repeat_ngram_size=no_repeat_ngram_size)

    def decode_logit_mask(self, suppress_unk: bool = True):
        """(V,) float32 added to the logits of every decoding step: a large negative value for the tokens a
        caption never contains (<pad>, <start>, and <unk> with `suppress_unk`), 0 elsewhere. Exported step
        functions add the same mask, so app-side search equals `decode`."""
        cfg = self.model_config
        banned = [cfg.pad_id, cfg.start_id] + ([cfg.unk_id] if suppress_unk else [])
        return tf.constant([NEG_INF if i in banned else 0.0 for i in range(cfg.vocab_size)], tf.float32)

    def sample(self, annotations, num_samples: int, max_length: int = 20, seed=None, suppress_unk: bool = True):
        """`num_samples` captions per image drawn from the model (ancestral sampling, no dropout). Hard attention
        draws its locations too when `hard_inference` is "sample" (then they are part of the sampled action and
        returned as `location`); otherwise its context is the inference one.

        Args:
            annotations: (B, L, D).
            num_samples: K.
            seed: int32 (2,) stateless seed (drawn from the model if None).
        Returns:
            dict with `tokens` (B*K, S) (the K samples of image b in rows b*K .. b*K + K-1, the end token
            included, then padding), `lengths` (B*K,), `log_probs` (B*K,), `alpha` (B*K, S, L) and for hard
            attention `location` (B*K, S).
        """
        cfg = self.model_config
        if seed is None:
            seed = tf.cast(self.seed_generator.next(), tf.int32)
        word_seed, location_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        state, step_fn = self.decode_step_fn(annotations, num_samples, location_seed, suppress_unk=suppress_unk)
        rows = tf.shape(annotations)[0] * num_samples
        return greedy_search(step_fn, state, rows, max_length, cfg.start_id, cfg.end_id, cfg.pad_id,
                             sample_seed=word_seed)

    def generate(self, annotations, beam_size: int = 1, max_length: int = 20, length_penalty: float = 0.0,
                 return_all_beams: bool = False, suppress_unk: bool = True, min_length: int = 0,
                 no_repeat_ngram_size: int = 0):
        """Captions for a batch of images, compiled once per (beam_size, max_length, length_penalty, suppress_unk,
        min_length, no_repeat_ngram_size); `min_length` bars the end token before that many words and
        `no_repeat_ngram_size` n > 0 bars any token that would repeat an n-gram of the caption (`beam_search`).

        Returns a dict of numpy-convertible tensors: `tokens` (B, S) (the end token included, then padding),
        `lengths` (B,), `log_probs` (B,), `scores` (B,), `alpha` (B, S, L) and for hard attention `location`
        (B, S); with `return_all_beams` every output keeps its beam axis K after B, best beam first.
        """
        return compiled.generate(self.decode, self._decoders, annotations, beam_size=beam_size,
                                 max_length=max_length, length_penalty=length_penalty,
                                 return_all_beams=return_all_beams, suppress_unk=suppress_unk,
                                 min_length=min_length, no_repeat_ngram_size=no_repeat_ngram_size)

    def get_config(self):
        config = super().get_config()
        config.update(vars(self.model_config))
        config["seed"] = self.seed
        config["unroll_steps"] = self.unroll_steps
        return config


def reward_to_go(values):
    """(B, T) -> (B, T): out[:, t] = sum_{t' >= t} values[:, t'] (masked values: padding adds nothing)."""
    return tf.cumsum(values, axis=1, reverse=True)


def _unpack(data):
    """Accepts {"annotations", "tokens"} dicts or (annotations, tokens) tuples (Keras passes (x,) or (x, y))."""
    if isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict):
        missing = {"annotations", "tokens"} - set(data)
        if missing:
            raise ValueError(f"Captioner input dict is missing {sorted(missing)}; it has {sorted(data)}")
        return data["annotations"], data["tokens"]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise ValueError("Captioner expects {'annotations': (B, L, D), 'tokens': (B, T+1)} or (annotations, tokens)")


def _batch_major(x):
    """(T, B, ...) -> (B, T, ...)."""
    perm = tf.concat([[1, 0], tf.range(2, tf.rank(x))], 0)
    return tf.transpose(x, perm)
