"""Warm start: a new run begins from the weights of another work dir's model (`TrainConfig.init_from`).

The use it was built for: hard attention fine-tuned from a trained soft-attention model. Both attention kinds have
the same trainable weights (embedding, f_att, the LSTM, f_beta, the init MLPs and the deep output layer; hard
attention only adds non-trainable state: the REINFORCE baseline, its variance and random-generator states), so a
hard run can start where a soft run ended and spend its epochs on the REINFORCE objective rather than on learning
the language model from scratch (docs/results.md: hard attention fine-tuned from soft matches soft).

What is copied: every trainable weight, matched by its path (`decoder/attention/score/kernel`, ...), from the
source's `best/` checkpoint (the weight average where the source kept one; falls back to its latest epoch). What is
not: the optimizer state (Adam's moments and the weight average start afresh), the REINFORCE baseline and variance
(they settle within ~10 steps: decay 0.9), the epoch counter and the best dev score. The warm start happens only
when the work dir has no checkpoint of its own: a resumed run continues from its own checkpoint, never again from
the source.

Fine-tuning on other captions (your own photos, `--dataset imagefolder`): a run with `init_from` uses the
source's vocabulary, never one built from its own captions (`source_vocabulary`, passed to
`pipelines.prepare.prepare_features` by the trainer), so the embedding rows and the output layer's columns keep
their words. Words of the new captions that the source's vocabulary lacks encode as <unk> in the training targets:
the model cannot learn to say them (to get new words, train from scratch). `describe_coverage` is the line the
trainer logs about them at the start.

Checked before any weight moves, each failure a ValueError naming the field: the source is not the run's own work
dir, its vocabulary file is the same (checksum; it is, unless the work dir's files were changed by hand), its
features come from the same encoder, layer and image size, and its architecture (embedding, units, attention size,
gate, feature width, vocabulary size) is the same.
"""

from __future__ import annotations

import os

from sat_tf.text.vocabulary import Vocabulary
from sat_tf.training import workdir as wd

# Fields of ModelConfig / DataConfig that decide the weights' shapes and meaning.
ARCHITECTURE_FIELDS = ("vocab_size", "feature_dim", "embedding_dim", "units", "attention_dim", "gate")
FEATURE_FIELDS = ("encoder", "encoder_layer", "image_size")


def check_source_path(init_from: str, workdir: str) -> None:
    """Raises ValueError where `init_from` names the run's own work dir (resuming needs no init_from).

    Args:
        init_from: str. `TrainConfig.init_from`.
        workdir: str. The work dir of the run being started.
    """
    if os.path.abspath(init_from) == os.path.abspath(workdir):
        raise ValueError(f"train.init_from={init_from!r} is this run's own work dir; to resume it, leave "
                         f"init_from out")


def source_vocabulary(init_from: str) -> Vocabulary:
    """The vocabulary of the model a run starts from: the one every run with `init_from` encodes its captions with.

    Args:
        init_from: str. `TrainConfig.init_from`: a trained work dir, or a preset (a shipped preset's name or a
            preset directory, `sat_tf.presets`).

    Raises:
        FileNotFoundError: no such work dir or preset, or it has no vocab.txt.
    """
    from sat_tf import presets

    preset = presets.find_preset(init_from)
    if preset is not None:
        return Vocabulary.load(os.path.join(preset, presets.ASSETS, presets.VOCAB))
    if not os.path.isdir(init_from):
        raise FileNotFoundError(f"train.init_from={init_from!r}: no such work dir or preset (shipped presets: "
                                f"{', '.join(presets.list_presets()) or 'none'})")
    vocabulary = wd.load_experiment(init_from).vocabulary
    if vocabulary is None:
        raise FileNotFoundError(f"{os.path.join(init_from, wd.VOCAB)} is missing: the source work dir is incomplete")
    return vocabulary


def describe_coverage(coverage: dict, init_from: str, vocabulary_size: int) -> str:
    """One log line: how many words of the training captions the source's vocabulary lacks (they train as <unk>).

    Args:
        coverage: `Vocabulary.coverage` of the training captions (the manifest's `vocabulary_coverage`).
        init_from: str. The source, for the message.
        vocabulary_size: int. Tokens of the source's vocabulary.
    """
    where = f"the vocabulary of {init_from} ({vocabulary_size} tokens)"
    if not coverage["unknown_words"]:
        return f"{where} has every word of the training captions"
    share = coverage["unknown_tokens"] / max(1, coverage["tokens"])
    frequent = ", ".join(f"{word} ({count})" for word, count in coverage["most_frequent_unknown"])
    return (f"{where} lacks {coverage['unknown_words']} of the {coverage['words']} distinct words of the training "
            f"captions ({coverage['unknown_tokens']} of {coverage['tokens']} word tokens, {share:.1%}); they train "
            f"as <unk> and the model cannot learn to say them (to learn new words, train from scratch). Most "
            f"frequent: {frequent}")


def check_compatible(target: wd.Experiment, source: wd.Experiment) -> None:
    """Raises ValueError naming every field in which `source` cannot initialise `target`."""
    problems = []
    if source.vocabulary is None:
        raise FileNotFoundError(f"{source.path(wd.VOCAB)} is missing: the source work dir is incomplete")
    if target.vocabulary is not None and source.vocabulary.checksum() != target.vocabulary.checksum():
        problems.append(f"{wd.VOCAB} differs ({source.path(wd.VOCAB)} vs {target.path(wd.VOCAB)}: other captions "
                        f"or other data.min_count / data.max_vocab)")
    for name in FEATURE_FIELDS:
        mine, theirs = getattr(target.data_config, name), getattr(source.data_config, name)
        if mine != theirs:
            problems.append(f"data.{name} is {theirs!r} there, {mine!r} here")
    for name in ARCHITECTURE_FIELDS:
        mine, theirs = getattr(target.model_config, name), getattr(source.model_config, name)
        if mine != theirs:
            problems.append(f"model.{name} is {theirs!r} there, {mine!r} here")
    if problems:
        raise ValueError(f"train.init_from={source.workdir!r} cannot initialise {target.workdir}: "
                         + "; ".join(problems))


def warm_start(captioner, target: wd.Experiment, source_workdir: str) -> str:
    """Copies the trainable weights of `source_workdir`'s best model (or of a preset's weights) into `captioner`
    (built from `target`'s model config). Returns the checkpoint path (or weights file) they came from.

    Args:
        captioner: the Captioner about to be trained, every weight created (possibly under a distribution
            strategy: its variables are assigned in the cross-replica context).
        target: the Experiment of the run being started (configs and vocabulary).
        source_workdir: str. A sat_tf work dir with a finished epoch, or a preset (name or directory).
    """
    from sat_tf.presets import load_model

    check_source_path(source_workdir, target.workdir)
    source_vocabulary(source_workdir)  # a clear error where it is neither a work dir nor a preset
    source = load_model(source_workdir, "best")  # its configs and vocabulary too
    check_compatible(target, source)
    theirs = {v.path: v for v in source.captioner.trainable_variables}
    mine = {v.path: v for v in captioner.trainable_variables}
    if set(theirs) != set(mine):
        raise ValueError(f"train.init_from={source_workdir!r}: the models' weights differ (only there: "
                         f"{sorted(set(theirs) - set(mine))}, only here: {sorted(set(mine) - set(theirs))})")
    for path, variable in mine.items():
        value = theirs[path]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"train.init_from={source_workdir!r}: weight {path} has shape {tuple(value.shape)} "
                             f"there, {tuple(variable.shape)} here")
        variable.assign(value.value)
    return source.checkpoint_path
