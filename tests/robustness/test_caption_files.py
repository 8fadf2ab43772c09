"""Bad caption files: the cases that tests/pipelines/test_sources.py does not already cover (blank lines, BOM, bad
UTF-8, tabs, commas, duplicate ids, missing images and empty captions are tested there, reader by reader; the
table in docs/robustness.md points at those tests). Every skipped or repaired item must be in the reader's report
with its file and line (or JSON path), and what is kept must reach the feature shards whole."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.pipelines import tfrecord
from sat_tf.pipelines.extract import extract_features
from sat_tf.pipelines.sources import CaptionRecord, read_coco, read_flickr8k, read_karpathy
from sat_tf.pipelines.sources import record as R
from sat_tf.text.vocabulary import END_ID, PAD_ID, START_ID, Vocabulary
from tests.pipelines import helpers
from tests.text.helpers import normalize_captions


def _flickr8k(tmp_path, token_bytes: bytes, names=("a.jpg", "b.jpg", "c.jpg")):
    root = tmp_path / "flickr8k"
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    (root / "Flickr8k_text").mkdir()
    for name in names:
        (root / "Flicker8k_Dataset" / name).write_bytes(b"jpeg")
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_bytes(token_bytes)
    return root


LINES = ["a.jpg#0\tA dog runs .", "a.jpg#1\tA brown dog , running .", "b.jpg#0\tA cat sleeps .",
         "c.jpg#0\tTwo birds fly ."]


def test_flickr8k_cr_only_line_endings(tmp_path):
    """A token file with classic-Mac "\\r" line ends: one caption per line, not every caption glued into the first."""
    root = _flickr8k(tmp_path, "\r".join(LINES).encode() + b"\r")
    records, report = read_flickr8k(root, unassigned_split="train")
    assert [(r.image_id, r.captions) for r in records] == [
        ("a", ("A dog runs .", "A brown dog , running .")), ("b", ("A cat sleeps .",)), ("c", ("Two birds fly .",))]
    assert report.num_skipped == 0 and report.count(R.TAB_IN_CAPTION) == 0, report.summary()


def test_flickr8k_utf16_file_is_refused_line_by_line(tmp_path):
    """A token file saved as UTF-16 (Windows Notepad "Unicode"): nothing is silently half-read; every line is
    reported as malformed with its line number, so the summary says what is wrong."""
    root = _flickr8k(tmp_path, "\n".join(LINES).encode("utf-16"))
    records, report = read_flickr8k(root, unassigned_split="train")
    assert records == []
    token_file = str(root / "Flickr8k_text" / "Flickr8k.token.txt")
    assert [(p.file, p.line) for p in report.of_kind(R.MALFORMED_LINE)] == [(token_file, n) for n in range(1, 5)]
    assert "malformed_line: 4" in report.summary()


def test_json_lone_surrogate_escape_is_repaired_and_reported(tmp_path):
    """JSON may escape half an emoji ("\\ud83d"); json.loads gives a str no UTF-8 encoder accepts, which crashed
    the vocabulary build with an error naming no file. Now it is U+FFFD, reported with its JSON path."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.jpg").write_bytes(b"jpeg")
    coco = tmp_path / "captions.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "1.jpg"}], "annotations": ['
                    '{"id": 5, "image_id": 1, "caption": "a dog \\ud83d on a sofa"},'
                    '{"id": 6, "image_id": 1, "caption": "a dog \\ud83d\\udc36 on a sofa"}]}')
    records, report = read_coco(coco, images, split="train")
    assert records[0].captions == ("a dog \ufffd on a sofa", "a dog \U0001F436 on a sofa")  # a valid pair is kept
    problem = report.of_kind(R.BAD_UTF8)
    assert [(p.file, p.line, p.action) for p in problem] == [(str(coco), None, "repaired")]
    assert problem[0].message.startswith("annotations[0].caption: a lone UTF-16 surrogate")
    assert Vocabulary.build(records[0].captions, min_count=1).tokens[4:] == ("a", "dog", "on", "sofa")

    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text('{"images": [{"filename": "1.jpg", "split": "train", "sentences": ['
                        '{"raw": "\\udc36 a cat", "sentid": 1}]}]}')
    records, report = read_karpathy(karpathy, images)
    assert records[0].captions == ("\ufffd a cat",)
    assert report.of_kind(R.BAD_UTF8)[0].message.startswith("images[0].sentences[0].raw:")


def test_karpathy_bom_and_bad_utf8(tmp_path):
    """The COCO reader's BOM / bad UTF-8 test, for the Karpathy reader (both parse JSON through read_json)."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.jpg").write_bytes(b"jpeg")
    text = json.dumps({"images": [{"filename": "1.jpg", "split": "val",
                                   "sentences": [{"raw": "CAPTION", "sentid": 1}]}]}, indent=1).encode()
    line = [b"CAPTION" in row for row in text.split(b"\n")].index(True) + 1
    path = tmp_path / "dataset_flickr8k.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace(b"CAPTION", b"a caf\xe9 table"))
    records, report = read_karpathy(path, images)
    assert records[0].captions == ("a caf\ufffd table",) and records[0].split == "val"
    assert [(p.kind, p.line) for p in report.problems] == [(R.BOM, 1), (R.BAD_UTF8, line)]


def test_invisible_letters_are_empty_captions(tmp_path):
    """U+3164 HANGUL FILLER (a popular "invisible" character) is a letter to str.isalnum() but normalisation drops
    it: a caption made of it was kept and became an empty <start> <end> training caption."""
    lines = ["a.jpg#0\t\u3164", "a.jpg#1\t\u3164\u3164 \u02bc", "a.jpg#2\tA dog .", "b.jpg#0\tA cat .",
             "c.jpg#0\tA bird ."]
    records, report = read_flickr8k(_flickr8k(tmp_path, "\n".join(lines).encode()), unassigned_split="train")
    assert records[0].captions == ("A dog .",)
    assert [p.line for p in report.of_kind(R.EMPTY_CAPTION)] == [1, 2]


def test_has_words_agrees_with_normalisation_on_every_letter_and_digit():
    """Every code point that `has_words` counts as a word character survives `normalize_caption` (exhaustive over
    the ~140,000 letters and digits of Unicode)."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).isalnum()]
    normalized = normalize_captions(chars)
    lost = [f"U+{ord(c):04X}" for c, n in zip(chars, normalized) if R.has_words(c) and not n]
    assert not lost, f"has_words accepts characters that normalisation drops: {lost[:20]}"


def test_long_caption_is_cut_with_end_kept_and_stored_whole(tmp_path):
    """A 60-word caption with commas, quotes and a tab: its tokens are cut to max_caption_length words and still
    end with <end>; the reference stored for scoring is the whole caption."""
    path = helpers.write_images(str(tmp_path / "images"), 1)[0]
    words = [f"w{k % 9}" for k in range(60)]
    long = 'A "quoted", long\tcaption: ' + " ".join(words) + " ."
    record = CaptionRecord("img000", path, (long, "a dog"), "train")
    vocabulary = Vocabulary.build([long, "a dog"], min_count=1)
    out = str(tmp_path / "features")
    manifest = extract_features([record], helpers.fake_encoder, helpers.ENCODER_INFO, vocabulary, out,
                                max_caption_length=6, shard_size=4, progress=False)
    shard = os.path.join(out, manifest["splits"]["train"]["shards"][0]["file"])
    example = tfrecord.parse_example(next(iter(tf.data.TFRecordDataset(shard))), tuple(manifest["feature_shape"]))
    assert [c.decode() for c in example["captions"].numpy()] == [long, "a dog"]
    tokens = example["tokens"].numpy()
    expected = [START_ID] + [vocabulary.token_to_id(w) for w in ["a", "quoted", "long", "caption", "w0", "w1"]]
    np.testing.assert_array_equal(tokens[0], expected + [END_ID])
    np.testing.assert_array_equal(tokens[1], [START_ID, vocabulary.token_to_id("a"), vocabulary.token_to_id("dog"),
                                              END_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID])
    assert example["lengths"].numpy().tolist() == [8, 4]
    assert manifest["splits"]["train"]["length_histogram"] == {"4": 1, "8": 1}


@pytest.fixture
def flickr8k_with_every_problem(tmp_path):
    """A Flickr8k layout (real PNGs) whose token and split files hold one of each problem the reader knows."""
    root = tmp_path / "flickr8k"
    names = [f"im{i}.png" for i in range(6)]
    images_dir = str(root / "Flicker8k_Dataset")
    for path, name in zip(helpers.write_images(images_dir, 6), names):
        os.replace(path, os.path.join(images_dir, name))
    os.remove(os.path.join(images_dir, "im5.png"))  # listed, captioned, but missing
    lines = [b"\xef\xbb\xbfim0.png#0\tA dog runs .", b"im0.png#1\tA dog\truns , fast .", b"",
             b"im1.png#0\tA caf\xe9 .", b"im1.png#0\tA duplicate id .", b"im2.png#0\t . ", b"im2.png#1\tA bird .",
             b"no tab here", b"im3.png#x\tnot IMAGE#N", b"im4.png#0\tA red ball .", b"im5.png#0\tA missing one .",
             b"im3.png#0\tA cat ."]
    (root / "Flickr8k_text").mkdir(parents=True)
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_bytes(b"\r\n".join(lines) + b"\r\n")
    (root / "Flickr8k_text" / "Flickr_8k.trainImages.txt").write_text("im0.png\nim1.png\nim2.png\nim5.png\n")
    (root / "Flickr8k_text" / "Flickr_8k.devImages.txt").write_text("im3.png\nim4.png\n")
    return root, len(lines)


def test_every_caption_line_is_kept_or_accounted_for(flickr8k_with_every_problem, tmp_path, monkeypatch):
    """Through `prepare_features` (reader -> vocabulary -> extraction -> manifest): captions in the shards plus the
    lines the report skipped plus the captions of skipped images equal the lines of the token file."""
    from sat_tf.config import DataConfig
    from sat_tf.pipelines.prepare import prepare_features
    from tests.robustness import fake_backbone

    fake_backbone.install(monkeypatch)
    root, num_lines = flickr8k_with_every_problem
    config = DataConfig(dataset="flickr8k", data_dir=str(root), encoder_layer="stage5", min_count=1, image_size=64,
                        shard_size=2)
    manifest = prepare_features(config, str(tmp_path / "features"), progress=False)
    counts = manifest["reader_report"]
    in_shards = sum(split["captions"] for split in manifest["splits"].values())
    line_level = sum(counts.get(kind, 0) for kind in (R.BLANK_LINE, R.DUPLICATE_CAPTION_ID, R.EMPTY_CAPTION,
                                                      R.MALFORMED_LINE))
    assert counts[R.MISSING_IMAGE] == 1  # im5.png and its one caption
    assert in_shards + line_level + 1 == num_lines, counts
    assert counts[R.BOM] == counts[R.BAD_UTF8] == counts[R.TAB_IN_CAPTION] == 1  # repaired, kept
    assert manifest["splits"]["train"]["images"] == 3 and manifest["splits"]["val"]["images"] == 2
