"""Several trained captioners decoding as one model: at every step the members' next-word distributions are
averaged, and beam search runs over the average (the ensembles of Vinyals et al. 2015, "Show and Tell", sec. 4.3,
and most captioning leaderboards since).

The members share one vocabulary; each keeps its own LSTM state and attention, so soft and hard members (decoding
with their `hard_inference`) mix freely. They may read different annotations of the same images (say
EfficientNet-Lite0 7x7 and Lite2 9x9 features): member m reads input `inputs[m]` of a tuple of annotation tensors,
one per encoder. The ensemble has the decoding interface of `Captioner` (`decode_step_fn`, `decode`, `generate`,
`model_config`), so `sat_tf.evaluation.scoring`, `sat_tf.inference.image_captioner` and the CLIs take it where they
take a Captioner.

Shapes: B images, K beams, N = B*K rows, M members, I inputs, L locations, D depth, V vocabulary, S max length.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from sat_tf.decoding import compiled
from sat_tf.decoding.beam_search import beam_search, greedy_search

COMBINE = ("probability", "log_probability")
# Fields every member's ModelConfig must share: the token ids the search emits (and, within one input, the depth
# D of the annotations it reads).
SHARED_FIELDS = ("vocab_size", "pad_id", "start_id", "end_id", "unk_id")


class CaptionEnsemble:
    """Decodes with the average of several Captioners' next-word distributions.

    Args:
        members: Captioners (at least one) with equal `SHARED_FIELDS` of their ModelConfigs.
        combine: "probability": p(w) = mean_m p_m(w) (the usual ensemble; a word any member is sure of keeps a
            high probability); "log_probability": p(w) proportional to exp(mean_m log p_m(w)) (a normalised
            geometric mean; a word survives only if no member rules it out).
        names: str per member for reports (default "member0", ...).
        inputs: int per member: which annotations it reads when the ensemble is given a tuple of I annotation
            tensors (one per encoder; input i is (B, L_i, D_i)); None: every member reads one (B, L, D) tensor.
            Members of one input must have the same feature_dim.

    The records of a step are the mean attention map `alpha` (N, L_0) of the members reading input 0 (maps over
    different grids do not add up); hard members' sampled locations are not returned (one location per member
    would not be one per word).
    """

    def __init__(self, members: Sequence, combine: str = "probability", names: Sequence[str] | None = None,
                 inputs: Sequence[int] | None = None):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one captioner")
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
        names = list(names) if names is not None else [f"member{m}" for m in range(len(members))]
        if len(names) != len(members):
            raise ValueError(f"{len(names)} names for {len(members)} members")
        self.multi_input = inputs is not None
        inputs = [int(i) for i in inputs] if inputs is not None else [0] * len(members)
        if len(inputs) != len(members) or sorted(set(inputs)) != list(range(max(inputs) + 1)):
            raise ValueError(f"inputs must give each of the {len(members)} members an input 0, 1, ... (each used), "
                             f"got {inputs}")
        first = members[0].model_config
        for name, member, i in zip(names, members, inputs):
            for field in SHARED_FIELDS:
                if getattr(member.model_config, field) != getattr(first, field):
                    raise ValueError(f"ensemble member {name} has model.{field}="
                                     f"{getattr(member.model_config, field)!r} but {names[0]} has "
                                     f"{getattr(first, field)!r}: members must share the vocabulary")
            depth = members[inputs.index(i)].model_config.feature_dim
            if member.model_config.feature_dim != depth:
                raise ValueError(f"ensemble member {name} has model.feature_dim={member.model_config.feature_dim} "
                                 f"but reads input {i}, of depth {depth}: members of one input share its features")
        self.members = members
        self.names = names
        self.combine = combine
        self.inputs = inputs
        self._decoders = {}

    @property
    def input_feature_dims(self) -> list[int]:
        """D_i of every input i (the feature_dim of its members)."""
        return [self.members[self.inputs.index(i)].model_config.feature_dim for i in range(max(self.inputs) + 1)]

    def _member_annotations(self, annotations) -> list:
        """The annotations each member reads: (B, L, D) for all, or input inputs[m] of a tuple."""
        if not self.multi_input:
            return [annotations] * len(self.members)
        count = max(self.inputs) + 1
        if not isinstance(annotations, (tuple, list)) or len(annotations) != count:
            raise ValueError(f"this ensemble reads {count} inputs: pass a tuple of that many (B, L_i, D_i) "
                             f"annotation tensors")
        return [annotations[i] for i in self.inputs]

    @property
    def model_config(self):
        """The first member's ModelConfig: its `SHARED_FIELDS` hold for every member (its feature_dim for the
        members of input 0; see `input_feature_dims`)."""
        return self.members[0].model_config

    is_hard = False  # decoding returns no `location` record

    def describe(self) -> dict:
        """What the metrics JSON records about this decoder."""
        return {"combine": self.combine, "members": [
            {"name": name, "attention": m.model_config.attention,
             **({"hard_inference": m.model_config.hard_inference} if m.is_hard else {}),
             **({"input": i} if self.multi_input else {})}
            for name, m, i in zip(self.names, self.members, self.inputs)]}

    def decode_step_fn(self, annotations, beam_size: int = 1, seed=None, suppress_unk: bool = True):
        """(initial state, step_fn) for `sat_tf.decoding` over B images x K beams: the state is the list of the
        members' states; step_fn maps tokens (N,) to the combined log-probabilities (N, V) and records the mean
        `alpha` (N, L_0). `seed` (int32 (2,)) reaches member m as fold_in(seed, m) (hard members that sample)."""
        state, images, step_fn = self.decode_image_step_fn(annotations, beam_size, seed, suppress_unk)
        return state, lambda tokens, state, t: step_fn(tokens, state, t, images)

    def decode_image_step_fn(self, annotations, beam_size: int = 1, seed=None, suppress_unk: bool = True):
        """`decode_step_fn` with the per-image tensors made explicit (see `Captioner.decode_image_step_fn`):
        (state, images (one entry per member), step_fn(tokens, state, t, images))."""
        states, images, step_fns = [], [], []
        for m, (member, member_annotations) in enumerate(zip(self.members, self._member_annotations(annotations))):
            member_seed = None if seed is None else tf.random.experimental.stateless_fold_in(seed, m)
            state, member_images, step_fn = member.decode_image_step_fn(member_annotations, beam_size, member_seed,
                                                                        suppress_unk=suppress_unk)
            states.append(state)
            images.append(member_images)
            step_fns.append(step_fn)
        log_members = math.log(len(self.members))

        def step_fn(tokens, state, t, images):
            log_probs, new_states, alphas = [], [], []
            for member_fn, member_state, member_images, i in zip(step_fns, state, images, self.inputs):
                member_log_probs, member_state, records = member_fn(tokens, member_state, t, member_images)  # (N, V)
                log_probs.append(member_log_probs)
                new_states.append(member_state)
                if i == 0:
                    alphas.append(records["alpha"])  # (N, L_0)
            stacked = tf.stack(log_probs)  # (M, N, V)
            if self.combine == "probability":
                combined = tf.reduce_logsumexp(stacked, axis=0) - log_members  # log mean_m p_m
            else:
                combined = tf.nn.log_softmax(tf.reduce_mean(stacked, axis=0))  # log of the normalised geometric mean
            return combined, new_states, {"alpha": tf.reduce_mean(tf.stack(alphas), axis=0)}  # (N, V), (N, L_0)

        return states, images, step_fn

    def decode(self, annotations, beam_size: int = 1, max_length: int = 20, length_penalty: float = 0.0,
               seed=None, suppress_unk: bool = True, min_length: int = 0, no_repeat_ngram_size: int = 0):
        """Batched decoding (greedy when beam_size == 1) of annotations (B, L, D) (a tuple of I such tensors for a
        multi-input ensemble); see `Captioner.decode`."""
        cfg = self.model_config
        if seed is None and any(m.is_hard and m.model_config.hard_inference == "sample" for m in self.members):
            seed = tf.cast(self.members[0].seed_generator.next(), tf.int32)
        batch = tf.shape(tf.nest.flatten(annotations)[0])[0]
        if beam_size == 1:
            state, step_fn = self.decode_step_fn(annotations, beam_size, seed, suppress_unk=suppress_unk)
            return greedy_search(step_fn, state, batch, max_length, cfg.start_id, cfg.end_id, cfg.pad_id,
                                 min_length=min_length, no_repeat_ngram_size=no_repeat_ngram_size)
        state, images, step_fn = self.decode_image_step_fn(annotations, beam_size, seed, suppress_unk=suppress_unk)
        return beam_search(step_fn, state, batch, beam_size, max_length, cfg.start_id, cfg.end_id, cfg.pad_id,
                           length_penalty, images=images, min_length=min_length,
                           no_repeat_ngram_size=no_repeat_ngram_size)

    def generate(self, annotations, beam_size: int = 1, max_length: int = 20, length_penalty: float = 0.0,
                 return_all_beams: bool = False, suppress_unk: bool = True, min_length: int = 0,
                 no_repeat_ngram_size: int = 0):
        """Captions for a batch of annotations (B, L, D), compiled once per decoding setting; see
        `Captioner.generate` (the outputs are the same, without `location`)."""
        return compiled.generate(self.decode, self._decoders, annotations, beam_size=beam_size,
                                 max_length=max_length, length_penalty=length_penalty,
                                 return_all_beams=return_all_beams, suppress_unk=suppress_unk,
                                 min_length=min_length, no_repeat_ngram_size=no_repeat_ngram_size)
