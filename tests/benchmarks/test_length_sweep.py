"""The dev-split length sweep (benchmarks/length_sweep.py) picks, from the K final beams, exactly the caption that
`evaluate` decodes with that length penalty, and prints one row per setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import length_sweep
from sat_tf.evaluation.scoring import evaluate
from sat_tf.training.workdir import load_captioner
from tests.robustness import tiny_run


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return load_captioner(tiny_run.trained_workdir(str(tmp_path_factory.mktemp("sweep"))))


def test_reranking_all_beams_equals_decoding_with_the_penalty(experiment):
    for min_length in (0, 3):
        images = length_sweep.decode_all_beams(experiment, "val", beam_size=3, min_length=min_length)
        assert all(min(len(c.split()) for c in image["captions"]) >= min_length for image in images)
        for length_penalty in (0.0, 0.5, 2.0):
            result = evaluate(experiment.captioner, experiment.vocabulary, experiment.features_dir, split="val",
                              beam_size=3, max_length=experiment.train_config.max_length,
                              length_penalty=length_penalty, min_length=min_length, metrics=("bleu",))
            assert length_sweep.rerank(images, length_penalty) == {d.image_id: d.caption for d in result.decoded}


def test_rerank_prefers_longer_beams_as_the_penalty_grows():
    image = {"image_id": "x", "captions": ["a dog", "a dog runs on the grass"],
             "log_probs": np.array([-2.0, -3.5], np.float32), "lengths": np.array([3, 7])}
    assert length_sweep.rerank([image], 0.0) == {"x": "a dog"}
    assert length_sweep.rerank([image], 1.0) == {"x": "a dog runs on the grass"}  # -0.67 vs -0.5


def test_sweep_prints_a_row_per_setting(experiment, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert length_sweep.main(["--workdir", experiment.workdir, "--beam-size", "1", "2", "--length-penalty", "0", "1",
                              "--min-length", "0", "2", "--out", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "BLEU" not in line]
    settings = [tuple(cell.strip() for cell in r.split("|")[1:4]) for r in rows]
    assert settings == [(k, a, m) for k in "12" for m in "02" for a in "01"]
    summaries = json.load(open(out))
    assert [s["decoding"]["beam_size"] for s in summaries] == [1] * 4 + [2] * 4
    assert [s["decoding"]["min_length"] for s in summaries] == [0, 0, 2, 2] * 2
    assert all(s["mean_words"]["generated"] >= s["decoding"]["min_length"] for s in summaries)
    assert all(np.isfinite(s["scores"]["length_ratio"]) for s in summaries)
    assert all(s["decoding"]["no_repeat_ngram_size"] == 0 for s in summaries)  # the work dir's value


def test_sweep_over_ngram_blocking_reports_repeat_rates(experiment, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert length_sweep.main(["--workdir", experiment.workdir, "--beam-size", "2", "--length-penalty", "1",
                              "--no-repeat-ngram-size", "0", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "BLEU" not in line]
    assert [tuple(cell.strip() for cell in r.split("|")[2:5]) for r in rows] == [("1", "0", "0"), ("1", "0", "1")]
    assert "% repeat a 3-gram" in printed.splitlines()[-1]
    summaries = json.load(open(out))
    assert [s["decoding"]["no_repeat_ngram_size"] for s in summaries] == [0, 1]
    blocked = [s["repeat_rate"]["generated"] for s in summaries if s["decoding"]["no_repeat_ngram_size"]]
    assert all(rates == {"3": 0.0, "2": 0.0} for rates in blocked)  # no word twice: no bigram or trigram twice
    assert all(set(s["repeat_rate"]["references"]) == {"3", "2"} for s in summaries)
    # the blocked captions are what evaluate decodes with the same flags
    images = length_sweep.decode_all_beams(experiment, "val", beam_size=2, min_length=0, no_repeat_ngram_size=1)
    result = evaluate(experiment.captioner, experiment.vocabulary, experiment.features_dir, split="val",
                      beam_size=2, max_length=experiment.train_config.max_length, length_penalty=1.0,
                      no_repeat_ngram_size=1, metrics=("bleu",))
    assert length_sweep.rerank(images, 1.0) == {d.image_id: d.caption for d in result.decoded}
