"""Presets (`sat_tf.presets`, `python -m sat_tf.export --format preset`): a work dir written as a preset captions
exactly as the work dir does, from Python (`ImageCaptioner.from_preset`) and from every CLI (`--preset DIR`);
float16 storage halves the file and keeps this decisive model's captions; machine paths never reach a preset; bad
preset names and incomplete directories get errors that say what is wrong."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from sat_tf.export.preset import export_preset
from sat_tf.inference.image_captioner import ImageCaptioner
from sat_tf.presets import (ASSETS, CONFIG, METADATA, MODEL_CARD, VOCAB, WEIGHTS, is_preset, list_presets,
                            load_metadata, load_model, load_preset, preset_dir)
from sat_tf.training.workdir import load_captioner, record_command


@pytest.fixture(scope="module")
def photo_files(images, tmp_path_factory) -> list[str]:
    directory = tmp_path_factory.mktemp("photos")
    paths = []
    for i, data in enumerate(images):
        path = directory / f"photo_{i}.img"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def presets(workdir, tmp_path_factory) -> dict[str, str]:
    """The fixture work dir exported as a float32 and a float16 preset (not scored: it has no features)."""
    record_command(workdir, ["--dataset", "flickr8k", "--data-dir", "data/flickr8k"])
    root = tmp_path_factory.mktemp("presets")
    experiment = load_model(workdir, "latest")
    return {dtype: export_preset(experiment, str(root / dtype), weights_dtype=dtype, score=False,
                                 commands=[f"python -m sat_tf.train --workdir {dtype}"], description="a test model")
            for dtype in ("float32", "float16")}


def _captions(captioner: ImageCaptioner, paths: list[str]) -> list[str]:
    results = captioner.caption(paths, beam_size=3)
    assert all(r.error is None for r in results)
    return [r.caption for r in results]


def test_a_preset_has_the_documented_files_and_no_machine_paths(presets, workdir):
    directory = presets["float16"]
    assert is_preset(directory)
    for name in (CONFIG, WEIGHTS, os.path.join(ASSETS, VOCAB), METADATA, MODEL_CARD):
        assert os.path.isfile(os.path.join(directory, name)), name
    with open(os.path.join(directory, CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    assert set(config) == {"model", "train", "data"}
    assert config["data"]["data_dir"] == config["data"]["features_dir"] == config["train"]["init_from"] == ""
    assert workdir not in open(os.path.join(directory, CONFIG), encoding="utf-8").read()
    metadata = load_metadata(directory)
    assert metadata["name"] == "float16" and metadata["weights"]["dtype"] == "float16"
    assert metadata["training_commands"] == ["python -m sat_tf.train --workdir float16"]
    assert metadata["evaluation"] is None
    assert metadata["vocabulary"]["size"] == load_captioner(workdir, "latest").vocabulary.size
    card = open(os.path.join(directory, MODEL_CARD), encoding="utf-8").read()
    for needle in ("# float16", "embedded scenes dataset", "Hendricks", "English only", "224x224", "@inproceedings{xu2015show",
                   "python -m sat_tf.train --workdir float16", "Not scored"):
        assert needle in card, needle


def test_float16_storage_halves_the_weights_and_restores_them_within_half_precision(presets, workdir):
    stored = {}
    for dtype, directory in presets.items():
        with h5py.File(os.path.join(directory, WEIGHTS)) as f:
            arrays = []
            f.visititems(lambda name, item: arrays.append(item) if isinstance(item, h5py.Dataset) else None)
            stored[dtype] = {"bytes": sum(a.nbytes for a in arrays),
                             "dtypes": {str(a.dtype) for a in arrays if a.size > 1}}
    assert stored["float32"]["dtypes"] == {"float32"} and stored["float16"]["dtypes"] == {"float16"}
    assert stored["float16"]["bytes"] < 0.51 * stored["float32"]["bytes"], stored  # the scalars stay float32
    trained = load_captioner(workdir, "latest").captioner
    for dtype, directory in presets.items():
        loaded = load_preset(directory).captioner
        assert [v.path.split("/", 1)[1] for v in loaded.weights] == [v.path.split("/", 1)[1] for v in trained.weights]
        for a, b in zip(trained.weights, loaded.weights):
            assert b.dtype == a.dtype
            tolerance = 0 if dtype == "float32" else 1e-3 * (1 + np.abs(np.asarray(a.value)).max())
            np.testing.assert_allclose(np.asarray(b.value), np.asarray(a.value), atol=tolerance, rtol=1e-3)


def test_from_preset_captions_exactly_as_the_work_dir(presets, workdir, photo_files, captions):
    expected = _captions(ImageCaptioner(load_captioner(workdir, "latest")), photo_files)
    assert expected == captions  # the fixture model is decisive: it says what it learnt
    for directory in presets.values():
        assert _captions(ImageCaptioner.from_preset(directory), photo_files) == expected


def test_the_caption_cli_with_a_preset_prints_the_work_dirs_captions(presets, workdir, photo_files, capsys):
    from sat_tf.caption import main

    outputs = []
    for flags in (["--workdir", workdir, "--which", "latest"], ["--preset", presets["float16"]]):
        assert main([*flags, "--beam-size", "3", "--no-progress", *photo_files]) == 0
        outputs.append(sorted(line for line in capsys.readouterr().out.splitlines() if "\t" in line))
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(photo_files)


def test_export_cli_writes_a_preset_and_exports_from_one(workdir, tmp_path, capsys):
    from sat_tf.export.__main__ import main

    out = str(tmp_path / "mine")
    assert main(["--workdir", workdir, "--which", "latest", "--format", "preset", "--out", out]) == 0
    assert "not scored" in capsys.readouterr().out
    metadata = load_metadata(out)
    assert metadata["training_commands"] == [
        "python -m sat_tf.train --dataset flickr8k --data-dir data/flickr8k"]  # the work dir's commands.txt
    assert main(["--preset", out, "--formats", "keras", "--out", str(tmp_path / "exports")]) == 0
    assert os.path.isfile(tmp_path / "exports" / "sat_tf_keras" / "captioner.keras")
    with pytest.raises(SystemExit):
        main(["--preset", out, "--formats", "preset,keras", "--out", str(tmp_path / "both")])


def test_preset_names_and_directories_are_checked(presets, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no preset 'no_such_preset': the shipped presets are"):
        preset_dir("no_such_preset")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / CONFIG).write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"incomplete is not a sat_tf preset: model\.weights\.h5, "
                                                r"assets/vocab\.txt, metadata\.json missing"):
        preset_dir(str(incomplete))
    with pytest.raises(FileNotFoundError, match="neither a work dir nor a preset"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs a hard-attention model"):
        load_preset(presets["float32"], hard_inference="argmax")
    assert all(is_preset(preset_dir(name)) for name in list_presets())


def test_a_preset_warm_starts_a_run_with_its_weights_and_vocabulary(presets, workdir, tmp_path):
    import dataclasses

    from sat_tf.training.warm_start import source_vocabulary, warm_start
    from sat_tf.training.workdir import Experiment, build_captioner

    preset = load_preset(presets["float32"])
    assert source_vocabulary(presets["float32"]) == preset.vocabulary
    train = dataclasses.replace(preset.train_config, init_from=presets["float32"])
    target = Experiment(str(tmp_path / "run"), preset.model_config, train, preset.data_config, preset.vocabulary)
    captioner = build_captioner(preset.model_config, seed=5)
    assert warm_start(captioner, target, presets["float32"]) == os.path.join(presets["float32"], WEIGHTS)
    for mine, theirs in zip(captioner.trainable_variables, preset.captioner.trainable_variables):
        np.testing.assert_array_equal(np.asarray(mine.value), np.asarray(theirs.value))
    with pytest.raises(FileNotFoundError, match="no such work dir or preset"):
        source_vocabulary(str(tmp_path / "nowhere"))
