"""Tests of the dataset readers on small fixtures written into tmp_path, one test per kind of bad input, and an
end-to-end read of the real Flickr8k copy (skipped where it is absent)."""

import collections
import json

import pytest

from sat_tf.pipelines.sources import CaptionRecord, ReadReport, read_coco, read_flickr8k, read_karpathy
from sat_tf.pipelines.sources import record as R

# Flickr8k -----------------------------------------------------------------------------------------------------------

TRAIN, DEV, TEST = ["a_1.jpg", "b_2.jpg"], ["c_3.jpg"], ["d_4.jpg"]


def _caption_lines(names, n=2):
    return [f"{name}#{k}\tCaption {k} of {name} ." for name in names for k in range(n)]


def _flickr8k(tmp_path, token_lines=None, token_bytes=None, splits=None, images=None):
    """Writes a Flickr8k layout; returns its root. `splits`: {split file key: list of lines} (default: all three)."""
    root = tmp_path / "flickr8k"
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    (root / "Flickr8k_text").mkdir()
    for name in (TRAIN + DEV + TEST) if images is None else images:
        (root / "Flicker8k_Dataset" / name).write_bytes(b"jpeg")
    if token_bytes is None:
        token_lines = _caption_lines(TRAIN + DEV + TEST) if token_lines is None else token_lines
        token_bytes = ("\n".join(token_lines) + "\n").encode("utf-8")
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_bytes(token_bytes)
    splits = {"train": TRAIN, "dev": DEV, "test": TEST} if splits is None else splits
    for key, names in splits.items():
        (root / "Flickr8k_text" / f"Flickr_8k.{key}Images.txt").write_text("\n".join(names) + "\n")
    return root


def _token_file(root):
    return str(root / "Flickr8k_text" / "Flickr8k.token.txt")


def _only(report: ReadReport, kind: str) -> R.Problem:
    """The single problem of `kind`, checking there is exactly one."""
    found = report.of_kind(kind)
    assert len(found) == 1, report.summary()
    return found[0]


def test_flickr8k_clean(tmp_path):
    root = _flickr8k(tmp_path)
    records, report = read_flickr8k(root)
    assert report.problems == []
    assert [(r.image_id, r.split) for r in records] == [("a_1", "train"), ("b_2", "train"), ("c_3", "val"),
                                                        ("d_4", "test")]
    assert records[0] == CaptionRecord("a_1", str(root / "Flicker8k_Dataset" / "a_1.jpg"),
                                       ("Caption 0 of a_1.jpg .", "Caption 1 of a_1.jpg ."), "train")
    assert (report.num_records, report.num_captions) == (4, 8)


def test_flickr8k_captions_ordered_by_number(tmp_path):
    lines = [f"a_1.jpg#{k}\tcaption {k}" for k in (2, 0, 1)]
    records, _ = read_flickr8k(_flickr8k(tmp_path, lines, splits={"train": ["a_1.jpg"]}))
    assert records[0].captions == ("caption 0", "caption 1", "caption 2")


def test_flickr8k_blank_lines(tmp_path):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines.insert(2, "")
    lines.insert(4, "   ")
    root = _flickr8k(tmp_path, lines)
    records, report = read_flickr8k(root)
    assert len(records) == 4 and report.num_captions == 8
    assert [(p.file, p.line) for p in report.of_kind(R.BLANK_LINE)] == [(_token_file(root), 3),
                                                                        (_token_file(root), 5)]


def test_flickr8k_bom(tmp_path):
    root = _flickr8k(tmp_path, token_bytes=b"\xef\xbb\xbf" + "\n".join(_caption_lines(TRAIN + DEV + TEST)).encode())
    records, report = read_flickr8k(root)
    assert records[0].image_id == "a_1" and len(records) == 4  # the first caption id is read without the BOM
    problem = _only(report, R.BOM)
    assert (problem.file, problem.line, problem.action) == (_token_file(root), 1, "repaired")


def test_flickr8k_bad_utf8_bytes(tmp_path):
    lines = [line.encode() for line in _caption_lines(TRAIN + DEV + TEST)]
    lines[1] = b"a_1.jpg#1\tA caf\xe9 with \xff\xfe bytes ."
    root = _flickr8k(tmp_path, token_bytes=b"\n".join(lines))
    records, report = read_flickr8k(root)
    assert records[0].captions[1] == "A caf\ufffd with \ufffd\ufffd bytes ."
    problem = _only(report, R.BAD_UTF8)
    assert (problem.line, problem.action) == (2, "repaired") and "invalid UTF-8" in problem.message


def test_flickr8k_crlf_line_endings(tmp_path):
    root = _flickr8k(tmp_path, token_bytes="\r\n".join(_caption_lines(TRAIN + DEV + TEST)).encode() + b"\r\n")
    records, report = read_flickr8k(root)
    assert records[0].captions[0] == "Caption 0 of a_1.jpg ." and report.problems == []


def test_flickr8k_tab_inside_caption(tmp_path):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines[0] = "a_1.jpg#0\tA dog\truns\t."
    records, report = read_flickr8k(_flickr8k(tmp_path, lines))
    assert records[0].captions[0] == "A dog runs ."
    assert _only(report, R.TAB_IN_CAPTION).line == 1


def test_flickr8k_commas_inside_caption(tmp_path):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines[0] = 'a_1.jpg#0\tA dog, a cat, and "a bird", together .'
    records, report = read_flickr8k(_flickr8k(tmp_path, lines))
    assert records[0].captions[0] == 'A dog, a cat, and "a bird", together .'
    assert report.problems == []


def test_flickr8k_duplicate_caption_id(tmp_path):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines.insert(2, "a_1.jpg#0\tA second caption 0 .")
    records, report = read_flickr8k(_flickr8k(tmp_path, lines))
    assert records[0].captions == ("Caption 0 of a_1.jpg .", "Caption 1 of a_1.jpg .")  # the first one is kept
    problem = _only(report, R.DUPLICATE_CAPTION_ID)
    assert problem.line == 3 and "already on line 1" in problem.message


def test_flickr8k_missing_image_file(tmp_path):
    root = _flickr8k(tmp_path, images=["a_1.jpg", "c_3.jpg", "d_4.jpg"])
    records, report = read_flickr8k(root)
    assert [r.image_id for r in records] == ["a_1", "c_3", "d_4"]
    problem = _only(report, R.MISSING_IMAGE)
    assert (problem.file, problem.line) == (_token_file(root), 3) and "b_2.jpg" in problem.message
    records, report = read_flickr8k(root, check_images=False)
    assert len(records) == 4 and report.problems == []


def test_flickr8k_empty_caption(tmp_path):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines[0] = "a_1.jpg#0\t"
    lines[1] = "a_1.jpg#1\t . "
    lines[2] = "b_2.jpg#0\t  "
    records, report = read_flickr8k(_flickr8k(tmp_path, lines))
    assert "a_1" not in [r.image_id for r in records]  # both of its captions were empty
    assert [p.line for p in report.of_kind(R.EMPTY_CAPTION)] == [1, 2, 3]
    assert _only(report, R.NO_CAPTIONS).line == 1
    assert records[0].captions == ("Caption 1 of b_2.jpg .",)


def test_flickr8k_malformed_line_without_tab(tmp_path):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines.insert(0, "a_1.jpg#3 A caption separated by a space .")
    records, report = read_flickr8k(_flickr8k(tmp_path, lines))
    assert len(records[0].captions) == 2
    problem = _only(report, R.MALFORMED_LINE)
    assert problem.line == 1 and "no tab" in problem.message


@pytest.mark.parametrize("caption_id", ["a_1.jpg", "a_1.jpg#", "a_1.jpg#x", "#0"])
def test_flickr8k_malformed_line_without_number(tmp_path, caption_id):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines.insert(1, f"{caption_id}\tA caption .")
    records, report = read_flickr8k(_flickr8k(tmp_path, lines))
    assert len(records) == 4 and report.num_captions == 8
    problem = _only(report, R.MALFORMED_LINE)
    assert problem.line == 2 and "IMAGE#N" in problem.message


def test_flickr8k_image_in_no_split_file(tmp_path):
    root = _flickr8k(tmp_path, splits={"train": TRAIN, "dev": DEV})  # no test split file, as in ../shared
    records, report = read_flickr8k(root)
    assert [r.split for r in records] == ["train", "train", "val"]
    assert "d_4.jpg" in _only(report, R.NO_SPLIT).message
    assert _only(report, R.MISSING_SPLIT_FILE).action == "note"
    records, report = read_flickr8k(root, unassigned_split="test")
    assert [(r.image_id, r.split) for r in records][-1] == ("d_4", "test") and report.count(R.NO_SPLIT) == 0
    with pytest.raises(ValueError, match="unassigned_split"):
        read_flickr8k(root, unassigned_split="dev")


def test_flickr8k_split_file_problems(tmp_path):
    root = _flickr8k(tmp_path, splits={"train": TRAIN + ["", "a_1.jpg", "zzz.jpg"], "dev": DEV + ["b_2.jpg"],
                                       "test": TEST})
    records, report = read_flickr8k(root)
    assert [(r.image_id, r.split) for r in records] == [("a_1", "train"), ("b_2", "train"), ("c_3", "val"),
                                                        ("d_4", "test")]
    train_file = str(root / "Flickr8k_text" / "Flickr_8k.trainImages.txt")
    assert (_only(report, R.BLANK_LINE).file, _only(report, R.BLANK_LINE).line) == (train_file, 3)
    assert _only(report, R.DUPLICATE_IMAGE).line == 4
    assert _only(report, R.UNKNOWN_IMAGE).line == 5
    assert "already in the train split" in _only(report, R.SPLIT_CONFLICT).message


def test_flickr8k_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Flicker8k_Dataset"):
        read_flickr8k(tmp_path)
    (tmp_path / "Flicker8k_Dataset").mkdir()
    with pytest.raises(FileNotFoundError, match="Flickr8k.token.txt"):
        read_flickr8k(tmp_path)


def test_report_summary_names_file_and_line(tmp_path):
    lines = _caption_lines(TRAIN + DEV + TEST)
    lines.insert(0, "no tab here")
    root = _flickr8k(tmp_path, lines)
    _, report = read_flickr8k(root)
    assert f"{_token_file(root)}:1: malformed_line" in report.summary()
    assert report.counts() == {R.MALFORMED_LINE: 1}


def test_caption_record_validation():
    with pytest.raises(ValueError, match="no captions"):
        CaptionRecord("x", "x.jpg", (), "train")
    with pytest.raises(ValueError, match="split"):
        CaptionRecord("x", "x.jpg", ("a",), "dev")
    assert CaptionRecord("x", "x.jpg", ["a"], "val").captions == ("a",)  # lists become tuples (hashable)


# COCO ---------------------------------------------------------------------------------------------------------------


def _coco(tmp_path, images=None, annotations=None, files=("1.jpg", "2.jpg"), data=None, raw=None):
    images_dir = tmp_path / "train2014"
    images_dir.mkdir(exist_ok=True)
    for name in files:
        (images_dir / name).write_bytes(b"jpeg")
    if data is None:
        default_images = [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}]
        default_annotations = [{"id": 10, "image_id": 1, "caption": "A man, riding a horse.\n"},
                               {"id": 11, "image_id": 2, "caption": "Two cats"},
                               {"id": 12, "image_id": 1, "caption": "A rider\ton a horse"}]
        data = {"images": default_images if images is None else images,
                "annotations": default_annotations if annotations is None else annotations}
    path = tmp_path / "captions_train2014.json"
    path.write_bytes(raw if raw is not None else json.dumps(data).encode("utf-8"))
    return path, images_dir


def test_coco_clean(tmp_path):
    path, images_dir = _coco(tmp_path)
    records, report = read_coco(path, images_dir, split="train")
    assert report.problems == []
    assert records == [CaptionRecord("1", str(images_dir / "1.jpg"), ("A man, riding a horse.", "A rider on a horse"),
                                     "train"),
                       CaptionRecord("2", str(images_dir / "2.jpg"), ("Two cats",), "train")]


def test_coco_missing_top_level_key(tmp_path):
    path, images_dir = _coco(tmp_path, data={"images": []})
    with pytest.raises(ValueError, match=rf"{path}: .*missing top-level key 'annotations'"):
        read_coco(path, images_dir, split="train")
    path, images_dir = _coco(tmp_path, data=[1, 2])
    with pytest.raises(ValueError, match=rf"{path}: .*got a JSON list"):
        read_coco(path, images_dir, split="train")
    path, images_dir = _coco(tmp_path, data={"images": {}, "annotations": []})
    with pytest.raises(ValueError, match="'images' must be a JSON array"):
        read_coco(path, images_dir, split="train")


def test_coco_not_json(tmp_path):
    path, images_dir = _coco(tmp_path, raw=b'{"images": [],\n "annotations": [}')
    with pytest.raises(ValueError, match=rf"{path}:2:\d+: not valid JSON"):
        read_coco(path, images_dir, split="train")


def test_coco_malformed_entries(tmp_path):
    images = [{"id": 1, "file_name": "1.jpg"}, {"id": 2}, "oops", {"id": [3], "file_name": "3.jpg"}]
    annotations = [{"id": 10, "image_id": 1, "caption": "fine"}, {"id": 11, "image_id": 1},
                   {"id": 12, "image_id": 1, "caption": 7}]
    path, images_dir = _coco(tmp_path, images, annotations)
    records, report = read_coco(path, images_dir, split="train")
    assert [r.captions for r in records] == [("fine",)]
    messages = [p.message for p in report.of_kind(R.MALFORMED_ENTRY)]
    assert messages == ["images[1] has no key 'file_name'", "images[2] is a JSON str, not an object",
                        "images[3] has an 'id' [3] that is neither a number nor a string",
                        "annotations[1] has no key 'caption'", "annotations[2] has a non-string 'caption' 7"]
    assert all(p.file == str(path) and p.line is None for p in report.problems)


def test_coco_wrong_schema_entries(tmp_path):
    path, images_dir = _coco(tmp_path, images=[{"image": 1, "path": "1.jpg"}])
    with pytest.raises(ValueError, match=rf"{path}: .*none of the 1 entries of 'images'.*no key 'id'"):
        read_coco(path, images_dir, split="train")


def test_coco_duplicate_caption_id(tmp_path):
    annotations = [{"id": 10, "image_id": 1, "caption": "first"}, {"id": 10, "image_id": 2, "caption": "again"},
                   {"id": 11, "image_id": 2, "caption": "ok"}]
    records, report = read_coco(*_coco(tmp_path, annotations=annotations), split="val")
    assert [r.captions for r in records] == [("first",), ("ok",)]
    assert "caption id 10 already used by annotations[0]" in _only(report, R.DUPLICATE_CAPTION_ID).message


def test_coco_unknown_image_id(tmp_path):
    annotations = [{"id": 10, "image_id": 1, "caption": "a"}, {"id": 11, "image_id": 2, "caption": "b"},
                   {"id": 12, "image_id": 99, "caption": "c"}]
    records, report = read_coco(*_coco(tmp_path, annotations=annotations), split="train")
    assert len(records) == 2 and "annotations[2]: image_id 99" in _only(report, R.UNKNOWN_IMAGE).message


def test_coco_duplicate_image(tmp_path):
    images = [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}, {"id": 1, "file_name": "1b.jpg"}]
    records, report = read_coco(*_coco(tmp_path, images=images), split="train")
    assert [r.image_path.endswith("1.jpg") for r in records] == [True, False]
    assert "images[2]" in _only(report, R.DUPLICATE_IMAGE).message


def test_coco_empty_caption_and_no_captions(tmp_path):
    annotations = [{"id": 10, "image_id": 1, "caption": "a horse"}, {"id": 11, "image_id": 2, "caption": " . \n"}]
    records, report = read_coco(*_coco(tmp_path, annotations=annotations), split="train")
    assert [r.image_id for r in records] == ["1"]
    assert "annotations[1]" in _only(report, R.EMPTY_CAPTION).message
    assert "image 2 (2.jpg)" in _only(report, R.NO_CAPTIONS).message


def test_coco_missing_image_file(tmp_path):
    path, images_dir = _coco(tmp_path, files=("1.jpg",))
    records, report = read_coco(path, images_dir, split="train")
    assert [r.image_id for r in records] == ["1"] and "2.jpg" in _only(report, R.MISSING_IMAGE).message
    with pytest.raises(FileNotFoundError, match="image folder"):
        read_coco(path, tmp_path / "nowhere", split="train")


def test_coco_bom_and_bad_utf8(tmp_path):
    text = json.dumps({"images": [{"id": 1, "file_name": "1.jpg"}],
                       "annotations": [{"id": 1, "image_id": 1, "caption": "CAPTION"}]}, indent=1).encode()
    caption_line = [b"CAPTION" in line for line in text.split(b"\n")].index(True) + 1
    raw = b"\xef\xbb\xbf" + text.replace(b"CAPTION", b"a caf\xe9 table")
    records, report = read_coco(*_coco(tmp_path, raw=raw, files=("1.jpg",)), split="train")
    assert records[0].captions == ("a caf\ufffd table",)
    assert _only(report, R.BOM).action == "repaired"
    assert _only(report, R.BAD_UTF8).line == caption_line


def test_coco_split_is_checked(tmp_path):
    with pytest.raises(ValueError, match="split"):
        read_coco(*_coco(tmp_path), split="val2014")


# Karpathy -----------------------------------------------------------------------------------------------------------


def _karpathy(tmp_path, entries, files=("val2014/a.jpg", "val2014/b.jpg", "train2014/c.jpg")):
    root = tmp_path / "coco"
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"jpeg")
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return path, root


def _entry(name, split, cocoid, sentences, filepath="val2014"):
    entry = {"filename": name, "split": split, "cocoid": cocoid,
             "sentences": [{"raw": s, "tokens": s.lower().split(), "sentid": cocoid * 10 + k}
                           for k, s in enumerate(sentences)]}
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


COCO_ENTRIES = [_entry("a.jpg", "test", 1, ["A dog.", "A brown dog"]), _entry("b.jpg", "restval", 2, ["Cats"]),
                _entry("c.jpg", "train", 3, ["A train"], filepath="train2014")]


def test_karpathy_coco_style_and_restval(tmp_path):
    path, root = _karpathy(tmp_path, COCO_ENTRIES)
    records, report = read_karpathy(path, root)
    assert report.problems == []
    assert records[0] == CaptionRecord("1", str(root / "val2014" / "a.jpg"), ("A dog.", "A brown dog"), "test")
    assert [r.split for r in records] == ["test", "train", "train"]
    records, _ = read_karpathy(path, root, restval_to_train=False)
    assert [r.split for r in records] == ["test", "restval", "train"]


def test_karpathy_flickr_style(tmp_path):
    entries = [{"filename": "123_abc.jpg", "imgid": 0, "split": "val",
                "sentences": [{"tokens": ["a", "dog"], "raw": "A dog .", "imgid": 0, "sentid": 0},
                              {"tokens": ["a", "big", "dog"], "imgid": 0, "sentid": 1}]}]
    path, root = _karpathy(tmp_path, entries, files=("123_abc.jpg",))
    records, report = read_karpathy(path, root)
    assert records == [CaptionRecord("123_abc", str(root / "123_abc.jpg"), ("A dog .", "a big dog"), "val")]
    assert report.problems == []


def test_karpathy_missing_images_key(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "imgs": []}))
    with pytest.raises(ValueError, match=rf"{path}: expected a Karpathy split file.*missing top-level key 'images'"):
        read_karpathy(path, tmp_path)


def test_karpathy_wrong_schema_entries(tmp_path):
    path, root = _karpathy(tmp_path, [{"file": "a.jpg", "captions": ["x"]}])
    with pytest.raises(ValueError, match=rf"{path}: .*none of the 1 entries of 'images'.*no key 'filename'"):
        read_karpathy(path, root)


def test_karpathy_malformed_entries(tmp_path):
    entries = COCO_ENTRIES[:1] + [{"filename": "b.jpg", "split": "train"}, {"filename": 5, "split": "train",
                                                                           "sentences": []},
                                  _entry("c.jpg", "train", 3, ["x"], filepath="train2014")]
    entries[-1]["sentences"].append("not an object")
    entries[-1]["sentences"].append({"sentid": 99})
    records, report = read_karpathy(*_karpathy(tmp_path, entries))
    assert [r.image_id for r in records] == ["1", "3"] and records[1].captions == ("x",)
    assert [p.message for p in report.of_kind(R.MALFORMED_ENTRY)] == [
        "images[1] has no key 'sentences'", "images[2] has a 'filename' that is not a JSON string",
        "images[3].sentences[1] is a JSON str, not an object",
        "images[3].sentences[2] has neither a string 'raw' nor a 'tokens' list"]


def test_karpathy_unknown_split_duplicates_and_empty(tmp_path):
    entries = [_entry("a.jpg", "dev", 1, ["x"]), _entry("b.jpg", "train", 2, ["A cat", "..."]),
               _entry("a.jpg", "train", 2, ["again"])]
    entries[1]["sentences"].append({"raw": "dup", "sentid": 20})
    records, report = read_karpathy(*_karpathy(tmp_path, entries))
    assert records == [CaptionRecord("2", records[0].image_path, ("A cat",), "train")]
    assert "split 'dev'" in _only(report, R.UNKNOWN_SPLIT).message
    assert "images[1].sentences[1]" in _only(report, R.EMPTY_CAPTION).message
    assert "sentid 20 already used by images[1].sentences[0]" in _only(report, R.DUPLICATE_CAPTION_ID).message
    assert "image '2' already in images[1]" in _only(report, R.DUPLICATE_IMAGE).message


def test_karpathy_missing_image_file(tmp_path):
    path, root = _karpathy(tmp_path, COCO_ENTRIES, files=("val2014/a.jpg",))
    records, report = read_karpathy(path, root)
    assert [r.image_id for r in records] == ["1"]
    assert [p.message.split(":")[0] for p in report.of_kind(R.MISSING_IMAGE)] == ["images[1]", "images[2]"]


# The real Flickr8k ---------------------------------------------------------------------------------------------------


def test_read_real_flickr8k_and_build_vocabulary(flickr8k_dir):
    from sat_tf.text import Vocabulary, tokenize_captions

    records, report = read_flickr8k(flickr8k_dir)
    print(report.summary())
    splits = collections.Counter(r.split for r in records)
    assert splits == {"train": 6000, "val": 1000}
    assert all(len(r.captions) == 5 for r in records)
    assert report.num_skipped == 0 and report.counts() == {R.MISSING_SPLIT_FILE: 1}  # no test split, by design
    assert len({r.image_id for r in records}) == 7000

    train = [c for r in records if r.split == "train" for c in r.captions]
    counts = collections.Counter(w for words in tokenize_captions(train) for w in words)
    sizes = {m: len(Vocabulary.from_counts(counts, min_count=m)) for m in (1, 3, 5)}
    print(f"Flickr8k train vocabulary sizes (4 special tokens included): {sizes}")
    assert sizes == {1: 7376, 3: 3478, 5: 2538}
    vocab = Vocabulary.build(train, min_count=5)
    assert len(vocab) == sizes[5] and vocab.tokens[4:7] == ("a", "in", "the")
