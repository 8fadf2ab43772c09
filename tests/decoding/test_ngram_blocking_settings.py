"""`TrainConfig.no_repeat_ngram_size` reaches the decoder everywhere a work dir decodes: the trainer's dev scoring,
`python -m sat_tf.evaluate` and `python -m sat_tf.caption` (each with a `--no-repeat-ngram-size` flag whose default
is the work dir's value); it survives the config round trip and may change when a work dir is reused."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from sat_tf import config as cfg
from sat_tf.decoding import compiled
from sat_tf.metrics.repetition import has_repeated_ngram
from sat_tf.training import trainer
from tests.robustness import fake_backbone, tiny_run

WORKDIR_N = 2


def spy_on_decoding(monkeypatch) -> list[int]:
    """Records the `no_repeat_ngram_size` of every compiled decoding call (Captioner/ensemble `generate`)."""
    seen, original = [], compiled.generate

    def generate(*args, **kwargs):
        seen.append(kwargs.get("no_repeat_ngram_size", 0))
        return original(*args, **kwargs)

    monkeypatch.setattr(compiled, "generate", generate)
    return seen


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(work dir trained with no_repeat_ngram_size=2, the values its dev scoring decoded with)."""
    root = str(tmp_path_factory.mktemp("blocking"))
    features_dir = os.path.join(root, "features")
    model, train, data = tiny_run.tiny_configs(features_dir, epochs=1, no_repeat_ngram_size=WORKDIR_N)
    tiny_run.prepare_with_fake_backbone(data, features_dir)
    workdir = os.path.join(root, "soft")
    with pytest.MonkeyPatch.context() as patch:
        seen = spy_on_decoding(patch)
        trainer.train(workdir, model, train, data, verbose=0, final_evaluation=False, tensorboard=False,
                      log=lambda line: None)
    return workdir, seen


def test_config_round_trip_and_validation(tmp_path):
    path = str(tmp_path / "config.json")
    cfg.save_config(path, train=cfg.TrainConfig(no_repeat_ngram_size=3))
    assert cfg.load_config(path)["train"].no_repeat_ngram_size == 3
    payload = json.load(open(path))
    del payload["train"]["no_repeat_ngram_size"]  # a work dir written before the field existed
    json.dump(payload, open(path, "w"))
    assert cfg.load_config(path)["train"].no_repeat_ngram_size == 0
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        cfg.TrainConfig(no_repeat_ngram_size=-1)


def test_a_reused_work_dir_may_change_it():
    configs = {"model": cfg.ModelConfig(), "train": cfg.TrainConfig(), "data": cfg.DataConfig()}
    changed = dict(configs, train=dataclasses.replace(configs["train"], no_repeat_ngram_size=3))
    assert trainer._comparable(configs) == trainer._comparable(changed)


def test_dev_scoring_decodes_with_the_work_dirs_value(trained):
    _, seen = trained
    assert seen and set(seen) == {WORKDIR_N}


@pytest.mark.parametrize("flag, want", [([], WORKDIR_N), (["--no-repeat-ngram-size", "0"], 0)])
def test_evaluate_flag_reaches_the_decoder(trained, monkeypatch, tmp_path, flag, want):
    from sat_tf.evaluate import main

    seen = spy_on_decoding(monkeypatch)
    assert main(["--workdir", trained[0], "--out", str(tmp_path), "--no-report", *flag]) == 0
    assert seen and set(seen) == {want}
    metrics = json.load(open(tmp_path / "metrics_val.json"))
    assert metrics["decoding"]["no_repeat_ngram_size"] == want
    assert set(metrics["repeat_rate"]["generated"]) == {"3", "2"}
    if want:
        assert metrics["repeat_rate"]["generated"][str(want)] == 0.0 == metrics["repeat_rate"]["generated"]["3"]
        captions = json.load(open(tmp_path / "captions_val.json"))
        assert not any(has_repeated_ngram(c["caption"], want) for c in captions)


@pytest.mark.parametrize("flag, want", [([], WORKDIR_N), (["--no-repeat-ngram-size", "1"], 1)])
def test_caption_flag_reaches_the_decoder(trained, monkeypatch, capsys, flag, want):
    from sat_tf.caption import main

    fake_backbone.install(monkeypatch)
    images = os.path.join(os.path.dirname(trained[0]), "features", "scenes", "images")
    seen = spy_on_decoding(monkeypatch)
    assert main(["--workdir", trained[0], os.path.join(images, "val_0000[0-3].png"), "--no-progress", *flag]) == 0
    assert seen and set(seen) == {want}
    captions = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(captions) == 4 and not any(has_repeated_ngram(c, want) for c in captions)
