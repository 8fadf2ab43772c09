"""Tests of the offline coco-caption scores: BLEU against a hand computation, identity cases, METEOR with and
without Java (never a silent 0), the Java process being reaped, input errors and the results-file format."""

import json
import math
import os
import shutil

import pytest
from pycocotools.coco import COCO

from sat_tf.metrics import coco_caption as cc
from sat_tf.metrics import CaptionScores, python_ptb_tokenize, score_captions, write_coco_results

HAS_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="needs `java` on PATH (OpenJDK) for PTBTokenizer/METEOR")
NO_JAVA = lambda: None  # noqa: E731 (a java lookup that finds nothing)
FAST = ("bleu", "rouge", "cider")  # everything but METEOR, which costs ~10 s of Java start-up per call

# Distinct captions: CIDEr's idf is log(N / df), so identical-caption tests need several different images.
IDENTICAL = {
    "1": "a brown dog runs across the green grass",
    "2": "two men are playing soccer in a stadium",
    "3": "a little girl climbs the wooden stairs",
}


def test_bleu_matches_hand_computation():
    # Image "a": refs of 3 and 7 tokens; the candidate has 6, so coco-caption's "closest" reference length is 7
    # (not the shortest, 3). Image "b": one 6-token ref, a 3-token candidate whose repeated "the" is clipped.
    references = {"a": ["A dog runs.", "a brown dog runs in the park"], "b": ["The cat sat on the mat!"]}
    candidates = {"a": "a dog runs in the grass", "b": "The the cat"}
    # a: unigrams a dog runs in the | grass          -> 5 correct of 6
    #    bigrams  a-dog dog-runs runs-in in-the | the-grass -> 4 of 5
    # b: unigrams the the cat (ref has "the" twice) -> 3 of 3;  bigrams the-cat | the-the -> 1 of 2
    correct1, guess1 = 5 + 3, 6 + 3
    correct2, guess2 = 4 + 1, 5 + 2
    test_len, ref_len = 6 + 3, 7 + 6  # corpus-level lengths; reference length per image = closest
    brevity = math.exp(1 - ref_len / test_len)  # test_len < ref_len
    bleu1 = correct1 / guess1 * brevity
    bleu2 = math.sqrt(correct1 / guess1 * correct2 / guess2) * brevity

    for lookup in ([cc.find_java] if HAS_JAVA else []) + [NO_JAVA]:  # both tokenizers agree on these captions
        scores = score_captions(references, candidates, metrics=("bleu",), java_lookup=lookup)
        assert scores["BLEU-1"] == pytest.approx(100 * bleu1, rel=1e-6)
        assert scores["BLEU-2"] == pytest.approx(100 * bleu2, rel=1e-6)
        # Per-image BLEU uses each image's own brevity penalty: b has 3 of 6 tokens -> exp(1 - 6/3).
        assert scores.per_image["BLEU-1"]["b"] == pytest.approx(100 * math.exp(-1), rel=1e-6)
        assert set(scores.scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}
        # BLEU's length ratio: candidate tokens over the closest-reference tokens, the ratio behind the penalty
        assert (scores.hypothesis_length, scores.reference_length) == (test_len, ref_len)
        assert scores.length_ratio == pytest.approx(test_len / ref_len)
        assert f"length ratio {test_len / ref_len:.3f}" in scores.format_table()
        assert scores.as_dict()["length_ratio"] == pytest.approx(test_len / ref_len)
        assert scores.meteor_status is None and "METEOR" not in scores.format_table()


def test_identical_captions_score_maximal():
    references = {i: [c] for i, c in IDENTICAL.items()}
    scores = score_captions(references, dict(IDENTICAL), metrics=FAST)
    assert scores["BLEU-4"] == pytest.approx(100.0)
    assert scores["ROUGE-L"] == pytest.approx(100.0)
    # CIDEr-D of a perfect match against one reference: cosine 1 for n = 1..4, times 10, times 100 for the report.
    assert scores["CIDEr"] == pytest.approx(1000.0)
    assert all(v == pytest.approx(1000.0) for v in scores.per_image["CIDEr"].values())
    worse = score_captions(references, {"1": "a dog", "2": "men playing", "3": "stairs"}, metrics=FAST)
    assert all(worse[k] < scores[k] for k in ("BLEU-1", "ROUGE-L", "CIDEr"))


@needs_java
def test_meteor_with_java_and_process_is_reaped(monkeypatch):
    processes = []
    original_close = cc._ClosableMeteor.close

    def spy_close(self):
        if getattr(self, "meteor_p", None) is not None:
            processes.append(self.meteor_p)
        original_close(self)

    monkeypatch.setattr(cc._ClosableMeteor, "close", spy_close)
    references = {i: [c, "a photo"] for i, c in IDENTICAL.items()}
    candidates = {"1": IDENTICAL["1"], "2": "a woman reads a book", "3": "a girl climbs wooden stairs"}
    scores = score_captions(references, candidates)
    assert scores.tokenizer == "ptb" and scores.tokenizer_note is None
    assert scores.unavailable == {}
    table = scores.format_table()
    assert "tokenizer: PTB (Stanford PTBTokenizer, Java)" in table and "METEOR: METEOR 1.5 (Java)" in table
    assert scores.as_dict()["meteor"] == "METEOR 1.5 (Java)"
    assert scores.as_dict()["tokenizer_status"] == "PTB (Stanford PTBTokenizer, Java)"
    assert 0.0 < scores["METEOR"] <= 100.0
    per_image = scores.per_image["METEOR"]
    assert per_image["1"] > per_image["3"] > per_image["2"]
    assert list(scores.keys()) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert len(processes) == 1 and processes[0].returncode is not None  # the Java process has exited


def test_missing_java_reports_meteor_unavailable_not_zero():
    references = {i: [c] for i, c in IDENTICAL.items()}
    scores = score_captions(references, dict(IDENTICAL), java_lookup=NO_JAVA)
    assert "METEOR" not in scores.scores
    assert scores.unavailable == {"METEOR": "java not found on PATH"}
    assert scores.tokenizer == "python" and "java" in scores.tokenizer_note
    assert scores["BLEU-4"] == pytest.approx(100.0)  # the other metrics still run
    with pytest.raises(KeyError, match="unavailable"):
        scores["METEOR"]
    table = scores.format_table().splitlines()
    assert len(table) == 10  # 7 metrics, the length ratio, the tokenizer, METEOR's status
    assert table[4].startswith("METEOR") and "n/a (java not found on PATH)" in table[4]
    assert table[7].startswith("length ratio 1.000")
    # the fallback is said in the table and in the JSON, never silent
    assert table[8] == "tokenizer: Python fallback (python_ptb_tokenize): java not found on PATH"
    assert table[9] == "METEOR: unavailable: java not found on PATH"
    summary = scores.as_dict()
    assert "METEOR" not in summary["scores"] and "METEOR" in summary["unavailable"]
    assert summary["tokenizer"] == "python" and summary["meteor"] == "unavailable: java not found on PATH"
    assert summary["tokenizer_status"].startswith("Python fallback")


@needs_java
@pytest.mark.parametrize("failure", ["bad_jar", "timeout"])
def test_meteor_subprocess_failure_reports_unavailable(monkeypatch, failure):
    import pycocoevalcap.meteor.meteor as stock

    if failure == "bad_jar":  # java starts, cannot open the jar and exits
        monkeypatch.setattr(stock, "METEOR_JAR", "no-such-meteor.jar")
    scores = score_captions({"1": ["a dog runs"]}, {"1": "a dog runs"}, metrics=("meteor",),
                            meteor_timeout_s=0.05 if failure == "timeout" else 300.0)
    assert "METEOR" not in scores.scores
    reason = scores.unavailable["METEOR"]
    assert reason.startswith("METEOR (java) failed")
    assert ("no-such-meteor.jar" in reason) if failure == "bad_jar" else ("killed after 0.05 s" in reason)


@pytest.mark.parametrize("raw, expected", [
    # Expected values are what pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1) printed for these inputs.
    ('A dog\'s ball, (red) is "here".', "a dog 's ball -lrb- red -rrb- is here"),
    ("Two men don't play soccer!", "two men do n't play soccer"),
    ("A black-and-white photo of 3.5 cats...", "a black-and-white photo of 3.5 cats"),
    ("It's a U.S. flag; isn't it?", "it 's a u.s. flag is n't it"),
    ("A man -- running: fast", "a man running fast"),
    ("cats' toys & a $5 bill at 5:30", "cats toys & a $ 5 bill at 5:30"),
    ("He said 'hello' to the `child`", "he said hello to the child"),
    ("Wow!!! 1,000 dogs, a,b", "wow !!! 1,000 dogs a b"),
    ("can't won't I'm we're they've, cannot", "ca n't wo n't i 'm we 're they 've can not"),
    ("   multiple   spaces   ", "multiple spaces"),
    ("", ""),
])
def test_python_tokenizer_matches_ptb_examples(raw, expected):
    assert python_ptb_tokenize(raw) == expected


@needs_java
def test_python_tokenizer_agrees_with_java_ptb():
    captions = {str(i): [c] for i, c in enumerate([
        "A child in a pink dress is climbing up a set of stairs in an entry way .",
        "Mr. Smith's dog (a collie) doesn't like the U.S.A. -- really!",
        "Two dogs ; one 's black , one 's white .", "the 1990s' music, 'quoted' and rock 'n' roll."])}
    tokenized = cc._ptb_tokenize(captions)
    assert {i: [python_ptb_tokenize(c) for c in caps] for i, caps in captions.items()} == tokenized


@pytest.mark.parametrize("references, candidates, message", [
    ({"1": ["a dog"]}, {"2": "a dog"}, "candidate image '2' has no references"),
    ({"1": ["a dog"]}, {1: "a dog"}, "candidate image 1 has no references"),
    ({"1": []}, {"1": "a dog"}, "references of image '1' are empty"),
    ({"1": "a dog"}, {"1": "a dog"}, "references of image '1' must be a list of str"),
    ({"1": ["a dog", None]}, {"1": "a dog"}, "reference 1 of image '1' must be a str"),
    ({"1": ["a dog"]}, {"1": ["a dog"]}, "candidate caption of image '1' must be a str"),
    ({"1": ["a dog"]}, {}, "candidates is empty"),
])
def test_bad_inputs_raise_value_error_naming_the_id(references, candidates, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        score_captions(references, candidates, java_lookup=NO_JAVA)


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="spice"):
        score_captions({"1": ["a dog"]}, {"1": "a dog"}, metrics=("bleu", "spice"))


def test_extra_references_are_ignored_and_empty_candidate_scores_zero():
    references = {"1": ["a dog runs on the grass"], "2": ["a cat sleeps"], "unused": ["a bird"]}
    scores = score_captions(references, {"1": "a dog runs on the grass", "2": ""}, metrics=FAST,
                            java_lookup=NO_JAVA)
    assert scores.num_images == 2 and set(scores.per_image["ROUGE-L"]) == {"1", "2"}
    assert scores.per_image["ROUGE-L"]["2"] == 0.0 and scores.per_image["CIDEr"]["2"] == 0.0


def test_results_json_is_coco_format(tmp_path):
    path = tmp_path / "out" / "results.json"
    records = write_coco_results(path, {"139": "a dog runs", "285": "a cat"})
    assert json.loads(path.read_text()) == records == [
        {"image_id": 139, "caption": "a dog runs"}, {"image_id": 285, "caption": "a cat"}]
    # pycocotools accepts it as a captioning results file for those images.
    coco = COCO()
    coco.dataset = {"images": [{"id": 139}, {"id": 285}], "annotations": [
        {"id": 1, "image_id": 139, "caption": "a dog"}, {"id": 2, "image_id": 285, "caption": "a cat"}]}
    coco.createIndex()
    results = coco.loadRes(str(path))
    assert sorted(results.getImgIds()) == [139, 285]

    flickr = tmp_path / "flickr.json"
    write_coco_results(flickr, {"1000268201_693b08cb0e.jpg": "a girl", "0042": "x"})
    assert [r["image_id"] for r in json.loads(flickr.read_text())] == ["1000268201_693b08cb0e.jpg", 42]
    write_coco_results(flickr, {"a.jpg": "a girl"}, image_ids={"a.jpg": 7})
    assert json.loads(flickr.read_text()) == [{"image_id": 7, "caption": "a girl"}]
    with pytest.raises(ValueError, match="'b.jpg' is missing from image_ids"):
        write_coco_results(flickr, {"b.jpg": "x"}, image_ids={"a.jpg": 7})
    with pytest.raises(ValueError, match="caption of image 'b.jpg' must be a str"):
        write_coco_results(flickr, {"b.jpg": 3})


def test_scores_to_json_is_atomic_and_complete(tmp_path):
    scores = score_captions({i: [c] for i, c in IDENTICAL.items()}, dict(IDENTICAL), java_lookup=NO_JAVA)
    path = tmp_path / "eval" / "scores.json"
    scores.to_json(path)
    scores.to_json(path)  # overwrite in place
    assert os.listdir(path.parent) == ["scores.json"]  # no temp file left behind
    payload = json.loads(path.read_text())
    assert payload["scores"]["BLEU-4"] == pytest.approx(100.0)
    assert payload["unavailable"] == {"METEOR": "java not found on PATH"}
    assert payload["tokenizer"] == "python" and payload["num_images"] == 3
    assert set(payload["per_image"]["CIDEr"]) == {"1", "2", "3"}
    assert isinstance(scores, CaptionScores) and "per_image" not in scores.as_dict()
