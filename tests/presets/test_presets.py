"""The presets shipped inside the package (`sat_tf/presets/`): both are there, within the size limit, caption a
photo in a fresh process with nothing but the install, and score on the first 100 Flickr8k dev photos what their
metadata.json (and so their model card) says they score."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sat_tf.presets import DEFAULT_PRESET, PRESETS_DIR, describe_presets, list_presets, load_metadata, preset_dir

SHIPPED = ("flickr8k_soft", "flickr8k_hard")
MAX_TOTAL_BYTES = 50 * 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _photo(path: str) -> str:
    """A simple outdoor-looking picture: sky, grass, a dark blob (what the model makes of it does not matter)."""
    image = Image.new("RGB", (320, 240), (120, 170, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 140, 320, 240], fill=(60, 150, 60))
    draw.ellipse([130, 110, 200, 170], fill=(40, 30, 20))
    noise = np.random.RandomState(0).randint(0, 20, size=(240, 320, 3)).astype(np.uint8)
    Image.fromarray(np.asarray(image) + noise).save(path, quality=90)
    return path


def test_both_presets_ship_within_the_size_limit_with_their_scores():
    assert set(SHIPPED) <= set(list_presets())
    assert DEFAULT_PRESET in SHIPPED
    total = sum(os.path.getsize(os.path.join(folder, name)) for preset in list_presets()
                for folder, _, names in os.walk(preset_dir(preset)) for name in names)
    assert total <= MAX_TOTAL_BYTES, f"the presets take {total / 2**20:.1f} MiB"
    for name in SHIPPED:
        meta = load_metadata(name)
        assert meta["name"] == name and meta["dataset"] == "flickr8k"
        assert meta["attention"] == name.split("_")[1]
        assert meta["weights"]["dtype"] == "float16"
        assert meta["encoder"]["name"] == "efficientnet_lite0" and meta["encoder"]["weights"] == "imagenet"
        assert all(c.startswith("python -m sat_tf.train --dataset flickr8k --data-dir data/flickr8k")
                   for c in meta["training_commands"])
        evaluation = meta["evaluation"]
        assert evaluation["split"] == "val" and evaluation["images"] == 1000
        assert evaluation["decoding"]["beam_size"] == 10
        assert evaluation["subsets"][0]["images"] == 100
        assert 15 < evaluation["scores"]["BLEU-4"] < 35  # a trained Flickr8k model, not a random one
        card = open(os.path.join(preset_dir(name), "README.md"), encoding="utf-8").read()
        assert f"{evaluation['scores']['BLEU-4']:.2f}" in card and "research use" in card
    listing = describe_presets().splitlines()
    assert [line.split("\t")[0] for line in listing] == list_presets()
    assert all("val split (1000 photos, beam 10): BLEU-4" in line for line in listing if line.startswith(SHIPPED))


def test_no_preset_file_names_a_machine_path():
    from tests.test_repository_text import MACHINE_PATH, SHARED

    for folder, _, names in os.walk(PRESETS_DIR):
        for name in names:
            if name.endswith((".json", ".md", ".txt")):
                text = open(os.path.join(folder, name), encoding="utf-8").read()
                assert not MACHINE_PATH.search(text) and SHARED not in text, (folder, name)


@pytest.mark.parametrize("preset", SHIPPED)
def test_each_preset_captions_a_photo_in_a_fresh_process(preset, tmp_path):
    photo = _photo(str(tmp_path / "park.jpg"))
    flags = [] if preset == DEFAULT_PRESET else ["--preset", preset]  # no model named: the default preset
    out = subprocess.run([sys.executable, "-m", "sat_tf.caption", *flags, "--no-progress", photo],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-2000:]
    path, caption = out.stdout.strip().split("\t")
    assert path == photo
    vocabulary = open(os.path.join(preset_dir(preset), "assets", "vocab.txt"), encoding="utf-8").read().split()
    assert 3 <= len(caption.split()) <= 20 and set(caption.split()) <= set(vocabulary), caption


@pytest.mark.parametrize("preset", SHIPPED)
def test_each_preset_scores_what_its_card_says_on_100_dev_photos(preset, flickr8k_dir, tmp_path, capsys):
    from sat_tf.evaluate import main

    stated = load_metadata(preset)["evaluation"]["subsets"][0]
    out = tmp_path / "eval"
    assert main(["--preset", preset, "--dataset", "flickr8k", "--data-dir", str(flickr8k_dir), "--split", "val",
                 "--limit", str(stated["images"]), "--out", str(out), "--no-report"]) == 0
    with open(out / "metrics_val.json", encoding="utf-8") as f:
        measured = json.load(f)
    assert measured["images"] == stated["images"]
    assert not os.path.exists(os.path.join(preset_dir(preset), "features_val_first100"))  # never in the package
    assert abs(measured["scores"]["scores"]["BLEU-4"] - stated["scores"]["BLEU-4"]) < 0.5, (measured, stated)


def test_a_shipped_preset_fine_tunes_on_a_small_imagefolder(tmp_path, capsys):
    """`train --dataset imagefolder --init-from flickr8k_soft` for one epoch: the run keeps the preset's vocabulary
    (its new word trains as <unk>), starts from the preset's weights and writes a work dir that captions."""
    from sat_tf.train import main
    from sat_tf.training.workdir import load_captioner

    photos = tmp_path / "photos"
    splits = {"train": ["a dog runs on the grass", "a black dog runs through the grass", "a quadcopter over a lake",
                        "two people walk on the beach", "a man rides a bike on the street"],
              "validation": ["a child jumps into the water"]}
    for split, captions in splits.items():
        (photos / split).mkdir(parents=True)
        with open(photos / split / "metadata.jsonl", "w", encoding="utf-8") as f:
            for i, caption in enumerate(captions):
                _photo(str(photos / split / f"p{i}.jpg"))
                f.write(json.dumps({"file_name": f"p{i}.jpg", "text": caption}) + "\n")
    workdir = str(tmp_path / "run")
    assert main(["--dataset", "imagefolder", "--data-dir", str(photos), "--init-from", DEFAULT_PRESET,
                 "--epochs", "1", "--learning-rate", "1e-4", "--workdir", workdir, "--verbose", "0",
                 "--set", "data.eval_images=1"]) == 0
    out = capsys.readouterr().out
    assert "quadcopter (1)" in out and "<unk>" in out  # the coverage line names the word the preset lacks
    trained = load_captioner(workdir)
    shipped = open(os.path.join(preset_dir(DEFAULT_PRESET), "assets", "vocab.txt"), encoding="utf-8").read()
    assert open(os.path.join(workdir, "vocab.txt"), encoding="utf-8").read() == shipped
    assert trained.model_config.vocab_size == load_metadata(DEFAULT_PRESET)["vocabulary"]["size"]
