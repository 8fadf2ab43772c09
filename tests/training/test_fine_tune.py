"""Fine-tuning a trained model on your own photos (`train --dataset imagefolder --init-from WORKDIR`): the run keeps
the source's vocabulary, words it lacks train as <unk> and are reported, and features made with one vocabulary are
never reused with another (while features extracted without a given vocabulary still serve the runs they did)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sat_tf.config import DataConfig
from sat_tf.pipelines import prepare, tfrecord
from sat_tf.text.vocabulary import SPECIAL_TOKENS, UNK_ID, Vocabulary
from sat_tf.training import workdir as wd
from sat_tf.training import trainer
from sat_tf.training.warm_start import describe_coverage, source_vocabulary
from tests.robustness import fake_backbone
from tests.robustness.tiny_run import tiny_configs, trained_workdir

# Words of the embedded scenes plus three that no source vocabulary here has: kayak, lake, drone. Every caption has
# six words: one caption-length bucket, so the train step is traced once.
CAPTIONS = ["a red circle beside a kayak", "a small kayak on the lake", "a kayak on a blue lake",
            "a drone above a yellow diamond", "a purple square beside a kayak", "a big red circle and square"]
NEW_WORDS = ("kayak", "lake", "drone")


def _photos(root, captions=CAPTIONS) -> str:
    """An imagefolder of one solid-colour photo per caption (metadata.jsonl)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "metadata.jsonl"), "w", encoding="utf-8") as f:
        for i, caption in enumerate(captions):
            Image.new("RGB", (24, 24), (40 * i, 200 - 30 * i, 90)).save(os.path.join(root, f"p{i}.png"))
            f.write(json.dumps({"file_name": f"p{i}.png", "text": caption}) + "\n")
    return str(root)


def checkpoint_workdir(root: str) -> str:
    """A work dir as training leaves one (config.json, vocab.txt, a best/ checkpoint), of a freshly initialised
    model of the `tiny_configs` sizes whose vocabulary is the captions' words except NEW_WORDS (and one more):
    the fine-tuning code paths without the cost of a training."""
    model, train, data = tiny_configs(os.path.join(root, "features"))
    words = sorted({w for caption in CAPTIONS for w in caption.split()} - set(NEW_WORDS)) + ["triangle"]
    vocabulary = Vocabulary(SPECIAL_TOKENS + tuple(words))
    model = dataclasses.replace(model, vocab_size=len(vocabulary))
    workdir = os.path.join(root, "soft")
    wd.save_experiment(workdir, model, train, data)
    vocabulary.save(os.path.join(workdir, wd.VOCAB))
    wd.checkpoint_for(wd.build_captioner(model, seed=3)).save(os.path.join(workdir, wd.BEST, "ckpt"))
    return workdir


@pytest.fixture(scope="module", params=["checkpoint", pytest.param("trained", marks=pytest.mark.slow)])
def source(request, tmp_path_factory) -> str:
    """The work dir a fine-tuning starts from: `checkpoint_workdir`, or (slow) one trained an epoch on the embedded
    scenes with fake-backbone features (`tiny_run.trained_workdir`)."""
    root = str(tmp_path_factory.mktemp("source"))
    return checkpoint_workdir(root) if request.param == "checkpoint" else trained_workdir(root)


def _fine_tune_configs(source_workdir: str, photos: str, features_dir: str, **train):
    model, train_config, data = tiny_configs(features_dir, epochs=1, **train)
    data = dataclasses.replace(data, dataset="imagefolder", data_dir=photos, max_images=0, eval_images=2)
    return model, dataclasses.replace(train_config, init_from=source_workdir), data


def _shard_tokens(features_dir: str) -> dict[str, list[tuple[str, list[int]]]]:
    """{split: [(caption, token ids without padding), ...]} of every record of the feature shards."""
    out: dict[str, list] = {}
    for name in sorted(os.listdir(features_dir)):
        if not name.endswith(".tfrecord"):
            continue
        for serialized in tf.data.TFRecordDataset(os.path.join(features_dir, name)):
            example = tfrecord.parse_example(serialized)
            for caption, tokens in zip(example["captions"].numpy(), example["tokens"].numpy()):
                out.setdefault(example["split"].numpy().decode(), []).append(
                    (caption.decode(), [int(t) for t in tokens if t]))
    return out


def test_fine_tuning_on_new_photos_keeps_the_source_vocabulary(source, tmp_path, monkeypatch):
    """One epoch of `--init-from` on an imagefolder: the source's vocabulary (so its weights keep their meaning),
    the new words as <unk> in the training targets, a log line naming them, and the source's weights as the start."""
    photos = _photos(tmp_path / "photos")
    features_dir = str(tmp_path / "features")
    model, train, data = _fine_tune_configs(source, photos, features_dir, learning_rate=1e-9)
    vocabulary = source_vocabulary(source)
    assert not set(NEW_WORDS) & set(vocabulary.tokens)
    unknown_words = {w for caption in CAPTIONS for w in caption.split() if w not in vocabulary.tokens}
    fake_backbone.install(monkeypatch)
    lines: list[str] = []
    workdir = str(tmp_path / "fine_tuned")
    trainer.train(workdir, model, train, data, verbose=0, final_evaluation=False, tensorboard=False,
                  log=lines.append)

    experiment = wd.load_experiment(workdir)
    assert experiment.vocabulary == vocabulary and experiment.model_config.vocab_size == len(vocabulary)
    manifest = json.load(open(os.path.join(features_dir, "manifest.json")))
    assert manifest["vocabulary"]["checksum"] == vocabulary.checksum()
    assert manifest["vocabulary_settings"]["given_vocabulary"] == vocabulary.checksum()

    # Every caption is encoded with the source's vocabulary; the words it lacks are <unk>, the others their ids.
    records = _shard_tokens(features_dir)
    assert sum(len(r) for r in records.values()) == len(CAPTIONS) and records["val"]
    for caption, tokens in (pair for split in records.values() for pair in split):
        expected = [UNK_ID if w in unknown_words else vocabulary.tokens.index(w) for w in caption.split()]
        assert tokens == [vocabulary.start_id, *expected, vocabulary.end_id], caption
    train_words = [w for caption, _ in records["train"] for w in caption.split()]
    assert sum(tokens.count(UNK_ID) for _, tokens in records["train"]) == sum(
        w in unknown_words for w in train_words) > 0

    # The log: the warm start, then the words the source's vocabulary lacks (in the train split's captions).
    start = next(i for i, line in enumerate(lines) if line.startswith("starting from the weights of"))
    coverage = manifest["vocabulary_coverage"]
    unknown = sorted({w for w in train_words if w in unknown_words})
    assert coverage["unknown_words"] == len(unknown) and coverage["tokens"] == len(train_words)
    assert coverage["unknown_tokens"] == sum(w in unknown_words for w in train_words)
    assert lines[start + 1] == describe_coverage(coverage, source, len(vocabulary))
    assert f"lacks {len(unknown)} of the" in lines[start + 1] and "<unk>" in lines[start + 1]
    assert all(f"{word} (" in lines[start + 1] for word in unknown)

    # At a learning rate of 1e-9 the weights are still the source's best after the epoch.
    got = {v.path: v.numpy() for v in wd.load_captioner(workdir, "latest").captioner.trainable_variables}
    for path, value in ((v.path, v.numpy()) for v in wd.load_captioner(source).captioner.trainable_variables):
        np.testing.assert_allclose(got[path], value, atol=1e-5, err_msg=path)


def test_features_without_a_given_vocabulary_are_reused_and_others_refused(tmp_path, monkeypatch):
    """A features dir written by a run without init_from (its manifest has no given_vocabulary, as every manifest
    written before vocabularies could be given) is reused by the same settings and, when its vocabulary is the one
    given, by a warm start (hard attention from soft on the same data); another vocabulary is refused."""
    fake_backbone.install(monkeypatch)
    photos = _photos(tmp_path / "photos")
    config = DataConfig(dataset="imagefolder", data_dir=photos, encoder_layer="stage5", image_size=64, min_count=1)
    features_dir = str(tmp_path / "features")
    made = prepare.prepare_features(config, features_dir, progress=False)
    assert "given_vocabulary" not in made["vocabulary_settings"] and "vocabulary_coverage" not in made

    def no_extraction(*args, **kwargs):
        raise AssertionError("the features should have been reused")

    monkeypatch.setattr(prepare, "extract_features", no_extraction)
    assert prepare.prepare_features(config, features_dir, progress=False) == made
    own = Vocabulary.load(os.path.join(features_dir, "vocab.txt"))
    assert prepare.prepare_features(config, features_dir, progress=False, vocabulary=own) == made
    other = Vocabulary(SPECIAL_TOKENS + ("a", "red", "circle"))
    with pytest.raises(ValueError, match="differs from the vocabulary this run was given"):
        prepare.prepare_features(config, features_dir, progress=False, vocabulary=other)


def test_features_made_with_a_given_vocabulary_serve_no_other(tmp_path, monkeypatch):
    fake_backbone.install(monkeypatch)
    photos = _photos(tmp_path / "photos")
    config = DataConfig(dataset="imagefolder", data_dir=photos, encoder_layer="stage5", image_size=64, min_count=1)
    features_dir = str(tmp_path / "features")
    given = Vocabulary(SPECIAL_TOKENS + ("a", "red", "circle", "kayak"))
    manifest = prepare.prepare_features(config, features_dir, progress=False, vocabulary=given)
    assert manifest["vocabulary_settings"]["given_vocabulary"] == given.checksum()
    assert manifest["vocabulary"]["checksum"] == given.checksum()
    # a later run with the same vocabulary reuses them (a resumed fine-tuning)
    assert prepare.prepare_features(config, features_dir, progress=False, vocabulary=given) == manifest
    with pytest.raises(ValueError, match="differs from the vocabulary these settings build"):
        prepare.prepare_features(config, features_dir, progress=False)


def test_vocabulary_coverage_counts_the_words_a_vocabulary_lacks():
    vocabulary = Vocabulary(SPECIAL_TOKENS + ("a", "dog"))
    coverage = vocabulary.coverage(["A dog and a kayak.", "a kayak!"], top=5)
    assert coverage == {"words": 4, "unknown_words": 2, "tokens": 7, "unknown_tokens": 3,
                        "most_frequent_unknown": [["kayak", 2], ["and", 1]]}
    assert describe_coverage(coverage, "runs/src", 6) == (
        "the vocabulary of runs/src (6 tokens) lacks 2 of the 4 distinct words of the training captions (3 of 7 word "
        "tokens, 42.9%); they train as <unk> and the model cannot learn to say them (to learn new words, train from "
        "scratch). Most frequent: kayak (2), and (1)")
    full = vocabulary.coverage(["a dog"])
    assert describe_coverage(full, "runs/src", 6) == ("the vocabulary of runs/src (6 tokens) has every word of the "
                                                      "training captions")


def test_the_train_command_reads_an_imagefolder_with_the_tuned_recipe():
    from sat_tf.train import build_parser, configs_from_args

    args = build_parser().parse_args(["--dataset", "imagefolder", "--data-dir", "data/my_photos", "--init-from",
                                      "runs/f8k_soft", "--epochs", "3", "--learning-rate", "1e-4"])
    configs = configs_from_args(args)
    assert (configs["data"].dataset, configs["data"].data_dir) == ("imagefolder", "data/my_photos")
    assert configs["train"].init_from == "runs/f8k_soft" and configs["train"].weight_average_decay == 0.998
    assert not configs["data"].mirrored_views  # one view, as COCO: user photos may say "left" and "right"
    with pytest.raises(ValueError, match="imagefolder"):
        DataConfig(dataset="image_folder")


def test_source_vocabulary_names_a_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such work dir"):
        source_vocabulary(str(tmp_path / "nowhere"))
    wd.save_experiment(str(tmp_path / "empty"), *tiny_configs(str(tmp_path / "f")))
    with pytest.raises(FileNotFoundError, match="vocab.txt is missing"):
        source_vocabulary(str(tmp_path / "empty"))
