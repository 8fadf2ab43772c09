"""The training entry point: overrides, the no-argument default (shortened), resume, divergence, caption/evaluate."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sat_tf import config as cfg
from sat_tf.train import main as train_main
from sat_tf.train import parse_overrides
from sat_tf.training import workdir as wd
from sat_tf.training import callbacks, trainer


def _tiny(features_dir: str, epochs: int = 3, **train):
    model, train_config, data = cfg.scenes_default()
    model = dataclasses.replace(model, embedding_dim=16, units=32, attention_dim=16, dropout=0.3)
    train_config = dataclasses.replace(train_config, epochs=epochs, batch_size=16, beam_size=2, patience=0,
                                       **train)
    data = dataclasses.replace(data, max_images=24, features_dir=features_dir, eval_images=8)
    return model, train_config, data


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    """Scenes features (24 images per split, real EfficientNet-Lite0 stage5) shared by the tests here."""
    root = str(tmp_path_factory.mktemp("features"))
    from sat_tf.pipelines.prepare import prepare_features

    prepare_features(_tiny(root)[2], root, progress=False)
    return root


def _weights(workdir: str, which: str = "latest") -> list[np.ndarray]:
    experiment = wd.load_captioner(workdir, which)
    return [v.numpy() for v in experiment.captioner.weights]


def _run_killed_after_epoch(monkeypatch, epoch: int, workdir: str, *configs) -> None:
    """Trains `workdir` and simulates a kill right after epoch `epoch` (1-based) has been checkpointed."""
    original = callbacks.WorkdirCallback.on_epoch_end

    def crash(self, e, logs=None):
        original(self, e, logs)
        if e + 1 == epoch:
            raise KeyboardInterrupt(f"simulated kill after epoch {epoch}")

    monkeypatch.setattr(callbacks.WorkdirCallback, "on_epoch_end", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(workdir, *configs, verbose=0, final_evaluation=False, tensorboard=False)
    monkeypatch.setattr(callbacks.WorkdirCallback, "on_epoch_end", original)


def test_overrides_parse_types_and_refuse_unknown_names():
    model, train, data = cfg.scenes_default()
    out = parse_overrides(["model.units=99", "train.learning_rate=0.5", "train.jit_compile=true",
                           "data.encoder_layer=top"], {"model": model, "train": train, "data": data})
    assert out["model"].units == 99 and out["train"].learning_rate == 0.5 and out["train"].jit_compile is True
    assert out["data"].encoder_layer == "top"
    from sat_tf.train import build_parser, configs_from_args

    args = build_parser().parse_args(["--attention", "hard", "--init-from", "runs/soft"])
    assert configs_from_args(args)["train"].init_from == "runs/soft"
    for bad, message in [("model.unitz=3", "has no field 'unitz'"), ("optim.lr=1", "unknown section"),
                         ("model.units=big", "is not a int"), ("units=3", "section.field=value")]:
        with pytest.raises(SystemExit, match=message):
            parse_overrides([bad], {"model": model, "train": train, "data": data})


def _averaged(workdir: str, epoch: int) -> list[np.ndarray]:
    """The weight average kept by the optimizer in epoch checkpoint `epoch` of a work dir."""
    from sat_tf.training.weight_average import averaged_weights

    experiment = wd.load_experiment(workdir)
    model = trainer.build_model(experiment.model_config, experiment.train_config)
    wd.checkpoint_for(model, model.optimizer).restore(
        os.path.join(workdir, wd.CHECKPOINTS, f"ckpt-{epoch}")).expect_partial()
    with averaged_weights(model):
        return [v.numpy().copy() for v in model.weights]


def test_resume_after_a_crash_gives_the_same_weights_as_an_uninterrupted_run(features_dir, tmp_path, monkeypatch):
    """With a weight average (train.weight_average_decay): it resumes too, and best/ holds it while the epoch
    checkpoints hold the raw weights."""
    configs = _tiny(features_dir, weight_average_decay=0.8, keep_checkpoints=3)
    straight = str(tmp_path / "straight")
    result = trainer.train(straight, *configs, verbose=0, final_evaluation=False, tensorboard=False)
    assert result.epochs_done == 3

    crashed = str(tmp_path / "crashed")
    _run_killed_after_epoch(monkeypatch, 1, crashed, *configs)
    assert tf.train.latest_checkpoint(os.path.join(crashed, "checkpoints")).endswith("ckpt-1")
    lines = []
    resumed = trainer.train(crashed, *configs, verbose=0, final_evaluation=False, tensorboard=False,
                            log=lines.append)
    assert resumed.epochs_done == 2 and any("resuming from" in line for line in lines)
    for which in ("latest", "best"):
        for a, b in zip(_weights(straight, which), _weights(crashed, which)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=which)
    raw, average = _weights(straight, "latest"), _averaged(straight, 3)
    assert any(np.abs(a - w).max() > 1e-4 for a, w in zip(average, raw))
    best = int(wd.find_checkpoint(straight, "best").rsplit("-", 1)[1])
    for got, want in zip(_weights(straight, "best"), _averaged(straight, best)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(features_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    trainer.train(workdir, *_tiny(features_dir, epochs=1), verbose=0, final_evaluation=False, tensorboard=False)
    good = _weights(workdir)
    real = trainer.training_dataset

    def poisoned(*args, **kwargs):
        return real(*args, **kwargs).map(lambda b: {"annotations": b["annotations"] * np.nan, "tokens": b["tokens"]})

    monkeypatch.setattr(trainer, "training_dataset", poisoned)
    with pytest.raises(trainer.TrainingDiverged, match=r"loss became nan at epoch 2, step 1.*ckpt-1"):
        trainer.train(workdir, *_tiny(features_dir, epochs=2), verbose=0, final_evaluation=False,
                      tensorboard=False)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-1")
    for a, b in zip(good, _weights(workdir)):
        np.testing.assert_array_equal(a, b)


def test_a_workdir_refuses_other_settings(features_dir, tmp_path):
    workdir = str(tmp_path / "w")
    trainer.prepare_workdir(workdir, *_tiny(features_dir), progress=False)
    model, train, data = _tiny(features_dir)
    with pytest.raises(ValueError, match=r"model.units"):
        trainer.prepare_workdir(workdir, dataclasses.replace(model, units=64), train, data, progress=False)
    # decoding's length settings are not training settings: a work dir trained before a new default still resumes
    trainer.prepare_workdir(workdir, model, dataclasses.replace(train, length_penalty=1.0, min_length=5), data,
                            progress=False)


def test_real_dataset_recipes_tuned_by_default_paper_on_request():
    """`--dataset flickr8k` gets the tuned recipe; `--recipe paper` the paper's settings; --set applies on top."""
    from sat_tf.train import build_parser, configs_from_args

    def configs(*argv):
        return configs_from_args(build_parser().parse_args(list(argv)))

    soft = configs("--dataset", "flickr8k", "--data-dir", "d")
    assert soft["model"].alpha_regularization == 0.0 and soft["model"].advantage_normalization is True
    assert soft["train"].weight_average_decay == 0.998 and soft["train"].epochs == 8
    assert soft["train"].length_penalty == 1.0 and soft["train"].min_length == 0
    assert soft["train"].beam_size == 10 and soft["train"].no_repeat_ngram_size == 2
    assert soft["data"].mirrored_views is True and soft["data"].mirror_probability == 0.5
    assert (soft["data"].encoder, soft["data"].encoder_layer) == ("efficientnet_lite0", "top")
    assert soft["data"].data_dir == "d"
    hard = configs("--dataset", "flickr8k", "--attention", "hard")
    assert hard["train"].epochs == 10 and hard["model"].expected_context_warmup_steps == 2800
    assert soft["model"].expected_context_warmup_steps == 0
    assert configs("--dataset", "coco", "--attention", "hard")["model"].expected_context_warmup_steps == 39000
    assert configs("--dataset", "imagefolder", "--attention", "hard")["model"].expected_context_warmup_steps == 0
    assert configs("--attention", "hard")["model"].expected_context_warmup_steps == 870  # the scenes
    assert configs()["model"].expected_context_warmup_steps == 0
    assert configs("--dataset", "flickr8k", "--attention", "hard", "--recipe", "paper"
                   )["model"].expected_context_warmup_steps == 0  # the paper's constant 0.5
    paper = configs("--dataset", "flickr8k", "--data-dir", "d", "--recipe", "paper")
    assert paper["model"].alpha_regularization == 1.0 and paper["model"].advantage_normalization is False
    assert paper["train"].weight_average_decay == 0.0 and paper["train"].epochs == 10
    assert paper["train"].length_penalty == 0.0 and paper["train"].beam_size == 3
    assert paper["train"].no_repeat_ngram_size == 0
    assert paper["data"].mirrored_views is False and paper["data"].mirror_probability == 0.0
    # the recipes differ in these fields only (the decoder, optimiser and vocabulary are the same)
    for section in ("model", "train", "data"):
        differing = {f.name for f in dataclasses.fields(soft[section])
                     if getattr(soft[section], f.name) != getattr(paper[section], f.name)}
        assert differing <= {"alpha_regularization", "advantage_normalization", "weight_average_decay", "epochs",
                             "mirrored_views", "mirror_probability", "beam_size", "length_penalty",
                             "no_repeat_ngram_size"}, differing
    coco = configs("--dataset", "coco", "--coco-annotations", "a.json")
    assert coco["data"].mirrored_views is False and coco["train"].weight_average_decay == 0.998
    assert coco["data"].coco_annotations == "a.json"
    assert configs("--dataset", "flickr8k", "--set", "data.mirror_probability=0.25",
                   "--epochs", "3")["data"].mirror_probability == 0.25
    with pytest.raises(SystemExit, match="recipe"):
        configs("--recipe", "paper")  # the scenes have one preset
    with pytest.raises(ValueError, match="recipe must be one of"):
        cfg.real_dataset_default("flickr8k", "d", recipe="best")


def test_flickr8k_command_quick_extracts_both_views_and_trains_the_tuned_recipe(flickr8k_dir, tmp_path, capsys):
    """`python -m sat_tf.train --dataset flickr8k --data-dir ../shared/flickr8k --quick`: real photos, the tuned
    recipe end to end (mirrored features extracted, the tuned config stored and trained), on 48 images per split."""
    workdir = str(tmp_path / "f8k")
    assert train_main(["--dataset", "flickr8k", "--data-dir", str(flickr8k_dir), "--quick", "--workdir", workdir,
                       "--verbose", "0", "--set", "train.epochs=1", "--set", "data.eval_images=8"]) == 0
    assert "BLEU-4" in capsys.readouterr().out
    manifest = json.load(open(os.path.join(workdir, "features", "manifest.json")))
    assert manifest["mirrored_views"] is True and manifest["splits"]["train"]["images"] == 48
    stored = json.load(open(os.path.join(workdir, "config.json")))
    assert stored["data"]["mirror_probability"] == 0.5 and stored["train"]["weight_average_decay"] == 0.998
    assert stored["model"]["alpha_regularization"] == 0.0
    history = json.load(open(os.path.join(workdir, "history.json")))
    assert [h["epoch"] for h in history] == [1] and np.isfinite(history[0]["loss"])


def test_default_command_quick_end_to_end_then_caption_and_evaluate(tmp_path, capsys):
    """`python -m sat_tf.train --quick` (the no-argument default, shortened), then evaluate and caption."""
    workdir = str(tmp_path / "quick")
    assert train_main(["--quick", "--workdir", workdir, "--verbose", "0", "--set", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    for expected in ("BLEU-4", "METEOR", "CIDEr", "attention grounding", "python -m sat_tf.caption",
                     "python -m sat_tf.evaluate", "python -m sat_tf.export"):
        assert expected in out
    assert os.path.exists(os.path.join(workdir, "config.json")) and os.path.exists(os.path.join(workdir, "vocab.txt"))
    assert os.path.exists(os.path.join(workdir, "eval", "metrics_val.json"))
    assert os.listdir(os.path.join(workdir, "logs"))
    history = json.load(open(os.path.join(workdir, "history.json")))
    assert [h["epoch"] for h in history] == [1]
    assert {"dev_BLEU-4", "dev_CIDEr", "dev_grounding", "xent", "loss"} <= set(history[0])

    from sat_tf.evaluate import main as evaluate_main

    assert evaluate_main(["--workdir", workdir, "--limit", "6", "--beam-size", "2", "--out", str(tmp_path / "ev")]) == 0
    assert "BLEU-1" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "ev" / "captions_val.json")

    from sat_tf.caption import main as caption_main

    image = os.path.join(workdir, "features", "scenes", "images", "val_00000.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    code = caption_main(["--workdir", workdir, image, str(bad), "--beam-size", "2"])
    captured = capsys.readouterr()
    assert code == 1  # one file failed, the other was captioned
    assert image in captured.out and "bad.jpg\terror: cannot identify image file" in captured.err


def test_mixed_precision_trains_in_bfloat16_with_float32_weights_and_does_not_leak():
    import keras

    model_config, train_config, _ = _tiny("")
    model_config = dataclasses.replace(model_config, vocab_size=20, feature_dim=8, attention="hard")
    rng = np.random.default_rng(0)
    batch = {"annotations": rng.random((4, 6, 8), dtype=np.float32),
             "tokens": rng.integers(3, 20, (4, 7)).astype(np.int32)}
    try:
        model = trainer.build_model(model_config, dataclasses.replace(train_config, mixed_precision=True))
        assert model.cell.compute_dtype == "bfloat16"
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        out = model.teacher_forcing(batch["annotations"], batch["tokens"], training=False)
        assert out["logits"].dtype == tf.float32  # softmax and losses in float32
        history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(3), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1]) and np.isfinite(history.history["reinforce"][-1])
        plain = trainer.build_model(model_config, train_config)
        assert plain.cell.compute_dtype == "float32"  # the global policy did not leak into the next build
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def hard_workdir(features_dir, tmp_path_factory):
    """A hard-attention work dir trained for one epoch on the tiny scenes features."""
    model, train, data = _tiny(features_dir, epochs=1)
    workdir = str(tmp_path_factory.mktemp("hard") / "hard")
    trainer.train(workdir, dataclasses.replace(model, attention="hard"), train, data, verbose=0,
                  final_evaluation=False, tensorboard=False)
    return workdir


def test_evaluate_and_caption_can_decode_hard_attention_another_way(features_dir, hard_workdir, tmp_path, capsys):
    from sat_tf.caption import main as caption_main
    from sat_tf.evaluate import main as evaluate_main

    model, train, data = _tiny(features_dir, epochs=1)
    workdir = hard_workdir
    assert wd.load_captioner(workdir).captioner.model_config.hard_inference == "expected"  # the work dir's
    experiment = wd.load_captioner(workdir, hard_inference="argmax")
    assert experiment.captioner.model_config.hard_inference == "argmax"
    assert experiment.model_config.hard_inference == "argmax"
    metrics = {}
    for mode in ("expected", "argmax"):
        out = str(tmp_path / f"ev_{mode}")
        assert evaluate_main(["--workdir", workdir, "--limit", "6", "--beam-size", "2", "--out", out,
                              "--hard-inference", mode]) == 0
        metrics[mode] = json.load(open(os.path.join(out, "metrics_val.json")))
        assert metrics[mode]["decoding"]["hard_inference"] == mode
    image = os.path.join(features_dir, "scenes", "images", "val_00000.png")
    assert os.path.exists(image)
    capsys.readouterr()
    figure = str(tmp_path / "argmax.png")
    assert caption_main(["--workdir", workdir, "--hard-inference", "argmax", "--beam-size", "2",
                         "--attention-map", figure, image]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{image}\t")
    # The one-epoch model may end a caption at once; a figure is drawn for every caption with words.
    caption = printed.split("\n", 1)[0].split("\t", 1)[1]
    assert os.path.exists(figure) == bool(caption.strip()), printed
    # A soft work dir is refused before any checkpoint is read, so its config alone is enough here.
    soft = str(tmp_path / "soft")
    wd.save_experiment(soft, model, train, data)
    with pytest.raises(ValueError, match="needs a hard-attention model"):
        wd.load_captioner(soft, hard_inference="argmax")
    capsys.readouterr()
    assert evaluate_main(["--workdir", soft, "--limit", "2", "--hard-inference", "sample"]) == 1
    assert "needs a hard-attention model" in capsys.readouterr().err
    assert caption_main(["--workdir", soft, "--hard-inference", "argmax", "x.jpg"]) == 1


def test_evaluate_and_caption_an_ensemble_of_work_dirs(features_dir, hard_workdir, tmp_path, capsys):
    """--ensemble decodes several work dirs as one model: a model ensembled with itself captions exactly as it
    does alone; a member with another vocabulary is refused by name (another encoder is the next test)."""
    import shutil

    from sat_tf.caption import main as caption_main
    from sat_tf.evaluate import main as evaluate_main

    copy = str(tmp_path / "copy")
    shutil.copytree(hard_workdir, copy)
    results = {}
    for name, extra in (("alone", []), ("twice", ["--ensemble", copy])):
        out = str(tmp_path / name)
        assert evaluate_main(["--workdir", hard_workdir, *extra, "--limit", "6", "--beam-size", "2",
                              "--out", out]) == 0
        results[name] = json.load(open(os.path.join(out, "captions_val.json")))
        metrics = json.load(open(os.path.join(out, "metrics_val.json")))
    assert results["twice"] == results["alone"] and len(results["alone"]) == 6
    members = metrics["decoding"]["ensemble"]["members"]
    assert [m["attention"] for m in members] == ["hard", "hard"] and copy in members[1]["name"]
    assert metrics["decoding"]["ensemble"]["combine"] == "probability"

    image = os.path.join(features_dir, "scenes", "images", "val_00000.png")
    figure = str(tmp_path / "ensemble.png")
    capsys.readouterr()
    assert caption_main(["--workdir", hard_workdir, "--ensemble", copy, "--combine", "log_probability",
                         "--beam-size", "2", "--attention-map", figure, image]) == 0
    assert image in capsys.readouterr().out and os.path.exists(figure)

    vocab = os.path.join(copy, wd.VOCAB)
    lines = open(vocab).read().splitlines()
    lines[-1] = lines[-1] + "x"  # same size, another word
    open(vocab, "w").write("\n".join(lines) + "\n")
    assert evaluate_main(["--workdir", hard_workdir, "--ensemble", copy, "--limit", "2"]) == 1
    assert "must share one vocabulary" in capsys.readouterr().err


def test_an_ensemble_over_two_encoders_reads_each_members_own_features(features_dir, hard_workdir, tmp_path,
                                                                       capsys):
    """A member whose encoder differs (here the same network at another image size, so another grid L) reads its
    own feature directory at evaluation and its own encoder's annotations when captioning files."""
    import shutil

    from sat_tf.caption import main as caption_main
    from sat_tf.evaluate import main as evaluate_main
    from sat_tf.pipelines.prepare import prepare_features

    experiment = wd.load_experiment(hard_workdir)
    other_features = str(tmp_path / "features_160")
    data = dataclasses.replace(experiment.data_config, image_size=160, features_dir=other_features)
    prepare_features(data, other_features, progress=False)
    other = str(tmp_path / "other")
    shutil.copytree(hard_workdir, other)
    wd.save_experiment(other, experiment.model_config, experiment.train_config, data)

    ensemble = wd.load_ensemble([hard_workdir, other])
    assert ensemble.captioner.inputs == [0, 1]
    assert ensemble.input_features_dirs == [experiment.features_dir, other_features]
    out = str(tmp_path / "eval")
    assert evaluate_main(["--workdir", hard_workdir, "--ensemble", other, "--limit", "6", "--beam-size", "2",
                          "--out", out]) == 0
    metrics = json.load(open(os.path.join(out, "metrics_val.json")))
    assert [m["input"] for m in metrics["decoding"]["ensemble"]["members"]] == [0, 1]
    assert len(json.load(open(os.path.join(out, "captions_val.json")))) == 6

    image = os.path.join(features_dir, "scenes", "images", "val_00000.png")
    figure = str(tmp_path / "two_encoders.png")
    capsys.readouterr()
    assert caption_main(["--workdir", hard_workdir, "--ensemble", other, "--beam-size", "2",
                         "--attention-map", figure, image]) == 0
    assert image in capsys.readouterr().out and os.path.exists(figure)


def test_mirrored_views_train_evaluate_and_caption(features_dir, hard_workdir, tmp_path, capsys, monkeypatch):
    """data.mirrored_views extracts both views, data.mirror_probability trains on them, and `--mirror` decodes
    both views as one model in evaluate and caption; features without the view are refused by name."""
    from sat_tf.caption import main as caption_main
    from sat_tf.evaluate import main as evaluate_main

    mirrored_features = str(tmp_path / "features_mirrored")
    model, train, data = _tiny(mirrored_features, epochs=1)
    data = dataclasses.replace(data, mirrored_views=True, mirror_probability=0.5)
    workdir = str(tmp_path / "mirror")
    asked = []
    original = trainer.training_dataset
    monkeypatch.setattr(trainer, "training_dataset",
                        lambda *a, **kw: asked.append(kw.get("mirror_probability")) or original(*a, **kw))
    result = trainer.train(workdir, model, train, data, verbose=0, final_evaluation=False, tensorboard=False)
    assert result.epochs_done == 1
    assert asked == [0.5]  # the setting reaches the input pipeline (whose draws tests/pipelines checks)
    manifest = json.load(open(os.path.join(mirrored_features, "manifest.json")))
    assert manifest["mirrored_views"] is True
    assert wd.load_experiment(workdir).data_config.mirror_probability == 0.5

    out = str(tmp_path / "eval")
    capsys.readouterr()
    assert evaluate_main(["--workdir", workdir, "--mirror", "--limit", "6", "--beam-size", "2", "--out", out]) == 0
    assert "mirrored views averaged" in capsys.readouterr().out
    metrics = json.load(open(os.path.join(out, "metrics_val.json")))
    assert metrics["decoding"]["mirror"] is True
    assert [m["input"] for m in metrics["decoding"]["ensemble"]["members"]] == [0, 1]
    assert len(json.load(open(os.path.join(out, "captions_val.json")))) == 6

    # caption mirrors the pixels itself, so any work dir can (this one's one-epoch captions are not empty)
    image = os.path.join(features_dir, "scenes", "images", "val_00000.png")
    figure = str(tmp_path / "mirror.png")
    assert caption_main(["--workdir", hard_workdir, "--mirror", "--beam-size", "2", "--attention-map", figure,
                         image]) == 0
    assert image in capsys.readouterr().out and os.path.exists(figure)

    assert evaluate_main(["--workdir", hard_workdir, "--mirror", "--limit", "2"]) == 1  # plain features
    assert f"{features_dir} has no mirrored views" in capsys.readouterr().err
    # a model trained without mirrored views reads the same encoder's features re-extracted with them
    plain, mirrored = str(tmp_path / "plain"), str(tmp_path / "mirrored")
    assert evaluate_main(["--workdir", hard_workdir, "--limit", "6", "--beam-size", "2", "--out", plain]) == 0
    assert evaluate_main(["--workdir", hard_workdir, "--features-dir", mirrored_features, "--limit", "6",
                          "--beam-size", "2", "--out", mirrored]) == 0
    assert json.load(open(os.path.join(mirrored, "captions_val.json"))) == \
        json.load(open(os.path.join(plain, "captions_val.json")))  # the photo's view is the same features
    assert evaluate_main(["--workdir", hard_workdir, "--features-dir", mirrored_features, "--mirror", "--limit",
                          "6", "--beam-size", "2", "--out", mirrored]) == 0
    assert json.load(open(os.path.join(mirrored, "metrics_val.json")))["decoding"]["mirror"] is True
    capsys.readouterr()
    assert evaluate_main(["--workdir", hard_workdir, "--features-dir", mirrored_features, features_dir]) == 1
    assert "got 2 directories for a model that reads 1 input" in capsys.readouterr().err
    manifest["encoder"]["image_size"] = 160
    json.dump(manifest, open(os.path.join(mirrored_features, "manifest.json"), "w"))
    assert evaluate_main(["--workdir", hard_workdir, "--features-dir", mirrored_features, "--limit", "2"]) == 1
    assert f"{mirrored_features} holds features of another encoder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def soft_workdir(features_dir, tmp_path_factory):
    """A soft-attention work dir trained for one epoch with a weight average (best/ holds the average)."""
    model, train, data = _tiny(features_dir, epochs=1, weight_average_decay=0.5)
    workdir = str(tmp_path_factory.mktemp("soft") / "soft")
    trainer.train(workdir, model, train, data, verbose=0, final_evaluation=False, tensorboard=False)
    return workdir


def _trainable(workdir: str, which: str) -> dict[str, np.ndarray]:
    return {v.path: v.numpy() for v in wd.load_captioner(workdir, which).captioner.trainable_variables}


def test_hard_attention_starts_from_a_soft_runs_best_weights_then_resumes_from_its_own(features_dir, soft_workdir,
                                                                                      tmp_path):
    """train.init_from (`--init-from`): a hard run begins at the soft run's best (averaged) weights; at a learning
    rate of 1e-9 they are still those weights after an epoch, unlike a fresh initialisation's (the same seed's
    random weights, which the soft run moved away from)."""
    model, train, data = _tiny(features_dir, epochs=1, learning_rate=1e-9)
    hard = dataclasses.replace(model, attention="hard")
    source = _trainable(soft_workdir, "best")
    warm, lines = str(tmp_path / "warm"), []
    trainer.train(warm, hard, dataclasses.replace(train, init_from=soft_workdir), data, verbose=0,
                  final_evaluation=False, tensorboard=False, log=lines.append)
    assert any(line.startswith("starting from the weights of") and "best" in line for line in lines), lines
    got = _trainable(warm, "latest")
    assert set(got) == set(source) and len(got) > 10
    for path, value in source.items():
        np.testing.assert_allclose(got[path], value, atol=1e-5, err_msg=path)
    fresh = {v.path: v.numpy() for v in trainer.build_model(
        dataclasses.replace(hard, vocab_size=len(source["embedding/embeddings"]),
                            feature_dim=len(source["decoder/init_h/kernel"])), train).trainable_variables}
    assert max(np.abs(fresh[p] - source[p]).max() for p in source) > 1e-3  # 100x the tolerance above

    # Resuming continues from the run's own checkpoint, never from the source again.
    lines = []
    result = trainer.train(warm, hard, dataclasses.replace(train, init_from=soft_workdir, epochs=2), data,
                           verbose=0, final_evaluation=False, tensorboard=False, log=lines.append)
    assert result.epochs_done == 1 and any("resuming from" in line for line in lines)
    assert not any("starting from" in line for line in lines)
    assert wd.load_experiment(warm).train_config.init_from == soft_workdir  # recorded in config.json


def test_init_from_refuses_an_incompatible_or_missing_source(features_dir, soft_workdir, tmp_path):
    from sat_tf.training.warm_start import check_compatible

    source = wd.load_experiment(soft_workdir)
    target = dataclasses.replace(source, workdir=str(tmp_path / "t"))
    check_compatible(target, source)  # itself: compatible
    for changed, message in [({"model_config": dataclasses.replace(source.model_config, units=64)}, "model.units"),
                             ({"data_config": dataclasses.replace(source.data_config, encoder_layer="top")},
                              "data.encoder_layer"),
                             ({"data_config": dataclasses.replace(source.data_config, image_size=260)},
                              "data.image_size")]:
        with pytest.raises(ValueError, match=message):
            check_compatible(dataclasses.replace(target, **changed), source)
    from sat_tf.text.vocabulary import Vocabulary

    other_words = Vocabulary(list(source.vocabulary.tokens[:-1]) + ["zzzebra"])
    with pytest.raises(ValueError, match="vocab.txt differs"):
        check_compatible(dataclasses.replace(target, vocabulary=other_words), source)
    model, train, data = _tiny(features_dir, epochs=1)
    with pytest.raises(FileNotFoundError, match="no such work dir"):
        trainer.train(str(tmp_path / "a"), model, dataclasses.replace(train, init_from=str(tmp_path / "nowhere")),
                      data, verbose=0, final_evaluation=False, tensorboard=False)
    with pytest.raises(ValueError, match="model.units is 32 there, 48 here"):
        trainer.train(str(tmp_path / "b"), dataclasses.replace(model, units=48),
                      dataclasses.replace(train, init_from=soft_workdir), data, verbose=0, final_evaluation=False,
                      tensorboard=False)
    own = str(tmp_path / "c")
    with pytest.raises(ValueError, match="this run's own work dir"):
        trainer.train(own, model, dataclasses.replace(train, init_from=own), data, verbose=0,
                      final_evaluation=False, tensorboard=False)


def test_init_from_under_a_distribution_strategy(features_dir, soft_workdir, tmp_path):
    """`--strategy mirrored --init-from`: a run under a strategy starts from the source's weights too."""
    model, train, data = _tiny(features_dir, epochs=1, learning_rate=1e-9)
    warm, lines = str(tmp_path / "warm"), []
    trainer.train(warm, dataclasses.replace(model, attention="hard"), dataclasses.replace(train, init_from=soft_workdir),
                  data, strategy="mirrored", log=lines.append, final_evaluation=False, verbose=0, tensorboard=False)
    assert any(line.startswith("starting from the weights of") for line in lines), lines
    got, source = _trainable(warm, "latest"), _trainable(soft_workdir, "best")
    for path, value in source.items():
        np.testing.assert_allclose(got[path], value, atol=1e-5, err_msg=path)
