"""The HTML evaluation report: its parts on constructed data, then `python -m sat_tf.evaluate` on a tiny trained
work dir, the report opened from disk in headless Chromium (skipped where Chromium is absent)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from sat_tf.evaluation.report import gallery_selection, length_histogram_svg, report_html
from sat_tf.evaluation.scoring import Decoded, Evaluation
from sat_tf.metrics import CaptionScores
from tests import headless_chromium
from tests.robustness import tiny_run


def test_gallery_takes_best_median_and_worst_without_overlap():
    scores = {f"im{i}": float(s) for i, s in enumerate([5, 90, 40, 10, 70, 20, 60, 30, 50, 80])}
    groups = gallery_selection(scores, count=3)
    assert groups["best"] == ["im1", "im9", "im4"]
    assert groups["worst"] == ["im5", "im3", "im0"]
    assert groups["median"] == ["im6", "im8", "im2"]  # the middle 3 of the remaining 4 (60, 50, 40, 30)
    few = gallery_selection({"a": 1.0, "b": 2.0}, count=3)
    assert few["best"] == ["b", "a"] and few["median"] == [] and few["worst"] == []


def test_length_histogram_bars_are_the_shares_of_each_length():
    svg = length_histogram_svg([3, 3, 4, 40], [5], max_words=10)
    titles = re.findall(r"<title>(\d+) words: ([\d.]+)%</title>", svg)
    shares = {}
    for words, share in titles:
        shares.setdefault(int(words), []).append(float(share))
    assert shares[3] == [50.0, 0.0] and shares[4] == [25.0, 0.0] and shares[5] == [0.0, 100.0]
    assert shares[10] == [25.0, 0.0]  # 40 words counted in the last ("10+") bin
    assert svg.startswith("<svg") and svg.endswith("</svg>")


def test_hard_attention_examples_name_the_chosen_location_of_every_word(tmp_path):
    image = str(tmp_path / "im.png")
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(image)
    decoded = [Decoded(image_id=f"im{i}", image_path=image, caption="a red box", words=["a", "red", "box"],
                       alpha=np.full((4, 6), 1 / 6, np.float32), location=np.array([0, 4, 5, 0]),
                       references=["a red box here"], log_prob=-1.0) for i in range(2)]
    scores = CaptionScores(scores={"CIDEr": 10.0}, per_image={"CIDEr": {"im0": 20.0, "im1": 5.0}}, unavailable={},
                           tokenizer="python", tokenizer_note="java not found on PATH", num_images=2,
                           metrics=("cider",), hypothesis_length=6, reference_length=8.0)
    evaluation = Evaluation("val", 3, scores, decoded, decoding={"hard_inference": "argmax", "beam_size": 3})
    text = report_html(evaluation, grid=(2, 3))
    # location s -> (row, column) = (s // 3, s % 3) on the 2x3 grid; one line per example
    assert text.count("argmax location per word (row, column of the 2x3 grid): a (0,0), red (1,1), box (1,2)") == 2
    assert "Python fallback (python_ptb_tokenize): java not found on PATH" in text and "0.750" in text
    assert text.index('id="example-im0"') < text.index('id="example-im1"')  # best (CIDEr 20) first


def test_scores_table_shows_the_repeat_rates_of_generated_and_reference_captions(tmp_path):
    image = str(tmp_path / "im.png")
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(image)
    captions = ["a boy in a blue shirt is wearing a blue shirt", "a dog runs", "a dog runs and a dog runs",
                "two men"]  # trigram repeats: 2 of 4; bigram repeats: the same 2
    references = [["a dog and a dog", "a cat"], ["a man"], ["the sea"], ["two men on a bench on a bench"]]
    decoded = [Decoded(image_id=f"im{i}", image_path=image, caption=c, words=c.split(),
                       alpha=np.zeros((len(c.split()) + 1, 4), np.float32), location=None, references=refs,
                       log_prob=-1.0) for i, (c, refs) in enumerate(zip(captions, references))]
    scores = CaptionScores(scores={"CIDEr": 10.0}, per_image={"CIDEr": {f"im{i}": 1.0 * i for i in range(4)}},
                           unavailable={}, tokenizer="python", tokenizer_note="", num_images=4, metrics=("cider",),
                           hypothesis_length=20, reference_length=20.0)
    evaluation = Evaluation("val", 3, scores, decoded, decoding={"no_repeat_ngram_size": 0})
    # of the 5 references, "... on a bench on a bench" repeats a trigram; it and "a dog and a dog" repeat a bigram
    assert evaluation.repeat_rates() == {"generated": {"3": 0.5, "2": 0.5}, "references": {"3": 0.2, "2": 0.4}}
    text = report_html(evaluation, grid=(2, 2))
    assert ("captions repeating a trigram: generated 50.0%, references 20.0%; a bigram: generated 50.0%, "
            "references 40.0%") in text
    assert "decoding: no_repeat_ngram_size</th><td>0" in text
    assert text.index("BLEU length ratio") < text.index("captions repeating")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny soft-attention work dir, trained 1 epoch on fake-backbone features, run through the evaluate CLI."""
    from sat_tf.evaluate import main as evaluate_main

    root = str(tmp_path_factory.mktemp("report"))
    workdir = tiny_run.trained_workdir(root)
    out = os.path.join(root, "eval")
    assert evaluate_main(["--workdir", workdir, "--beam-size", "2", "--out", out]) == 0
    return out


def test_evaluate_writes_a_self_contained_report_beside_the_metrics(evaluated, capsys):
    report = os.path.join(evaluated, "report_val.html")
    metrics = json.load(open(os.path.join(evaluated, "metrics_val.json")))
    text = open(report, encoding="utf-8").read()
    # the scores table: metrics, length ratio, tokenizer and METEOR as the JSON says, the decoding settings
    scores = metrics["scores"]
    assert f'{scores["scores"]["CIDEr"]:.2f}' in text
    assert f'{scores["length_ratio"]:.3f}' in text and "BLEU length ratio" in text
    assert scores["tokenizer_status"] in text and scores["meteor"] in text
    assert "decoding: beam_size</th><td>2" in text and "decoding: length_penalty" in text
    assert "captions repeating a trigram: generated" in text and "decoding: no_repeat_ngram_size" in text
    assert metrics["mean_words"]["generated"] > 0 and metrics["mean_words"]["references"] > 0
    # self-contained: every image is a data URI, nothing is fetched
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|//)', text) and "<script" not in text
    # best / median / worst: 8 dev images -> 3 + 2 + 3, each with its references and one figure
    assert text.count('class="example"') == 8 and len(sources) == 8
    assert "<svg" in text and "caption length histogram" in text


def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    report = os.path.join(evaluated, "report_val.html")
    seen = headless_chromium.load_page(report, str(tmp_path / "report.png"))
    probe = seen["probe"]
    assert probe["images"] == 8 and probe["loaded"] == 8, probe  # every gallery figure decoded
    assert probe["errors"] == [], probe["errors"]
    assert not [line for line in seen["console"] if "error" in line.lower()], seen["console"]
    shot = np.asarray(Image.open(seen["screenshot"]).convert("RGB"), dtype=np.float64)  # (H, W, 3)
    assert shot.std() > 20, "the screenshot is blank"
    # the attention figures are drawn: many distinct colours, and dark panel pixels well below the page's white
    assert len(np.unique(shot.reshape(-1, 3).astype(np.uint8), axis=0)) > 500
    assert (shot.mean(axis=2) < 100).mean() > 0.01


def test_scores_table_and_summary_carry_the_attention_spread(tmp_path):
    image = str(tmp_path / "im.png")
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(image)
    alpha = np.zeros((4, 4), np.float32)
    alpha[[0, 1, 2, 3], [1, 1, 3, 0]] = 1.0  # words peak at cells 1, 1, 3; the <end> row at 0 does not count
    decoded = [Decoded(image_id="im0", image_path=image, caption="a red box", words=["a", "red", "box"],
                       alpha=alpha, location=None, references=["a red box"], log_prob=-1.0)]
    scores = CaptionScores(scores={"CIDEr": 10.0}, per_image={"CIDEr": {"im0": 1.0}}, unavailable={},
                           tokenizer="python", tokenizer_note="", num_images=1, metrics=("cider",),
                           hypothesis_length=3, reference_length=3.0)
    evaluation = Evaluation("val", 3, scores, decoded)
    spread = evaluation.summary()["attention_spread"]
    assert spread["distinct_cells"] == 2.0 and spread["top_cell_share"] == pytest.approx(2 / 3)
    assert spread["captions"] == 1 and spread["entropy"] == pytest.approx(0.0)
    assert "2.00 distinct peak cells per caption, 67% of words at the caption&#x27;s top cell" in report_html(
        evaluation, grid=(2, 2))
