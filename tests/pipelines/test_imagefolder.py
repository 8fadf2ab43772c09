"""The imagefolder reader (your own photos with a metadata.jsonl or metadata.csv): layouts, the seeded split, every
kind of bad input named by file and line, the check command on such a folder, and extraction skipping a corrupt
photo."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from PIL import Image

from sat_tf.config import DataConfig
from sat_tf.pipelines.sources import read_imagefolder
from sat_tf.pipelines.sources import record as R
from sat_tf.pipelines.sources.imagefolder import split_rank, val_count


def _image(path) -> None:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.new("RGB", (12, 10), (200, 40, 40)).save(str(path))


def _jsonl(folder, entries, images=None) -> str:
    """Writes folder/metadata.jsonl (entries: dicts, or str written as the line) and the photos it names (or
    `images`); returns the metadata path."""
    os.makedirs(str(folder), exist_ok=True)
    names = images if images is not None else sorted({e["file_name"] for e in entries if isinstance(e, dict)})
    for name in names:
        _image(os.path.join(str(folder), name))
    path = os.path.join(str(folder), "metadata.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries)
    return path


def _csv(folder, text: str, images=("a.jpg", "b.jpg")) -> str:
    os.makedirs(str(folder), exist_ok=True)
    for name in images:
        _image(os.path.join(str(folder), name))
    path = os.path.join(str(folder), "metadata.csv")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return path


def _only(report, kind: str) -> R.Problem:
    found = report.of_kind(kind)
    assert len(found) == 1, report.summary()
    return found[0]


def _splits(records) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for record in records:
        out.setdefault(record.split, []).append(record.image_id)
    return out


# Layouts -------------------------------------------------------------------------------------------------------------


def test_jsonl_text_lines_and_captions_lists_make_one_record_per_photo(tmp_path):
    path = _jsonl(tmp_path, [{"file_name": "a.jpg", "text": "a dog on the beach"},
                             {"file_name": "b.png", "captions": ["a cat", "  a  grey\tcat "]},
                             {"file_name": "a.jpg", "text": "a brown dog runs"},
                             {"file_name": "sub/c.jpg", "text": "a bird"}])
    records, report = read_imagefolder(tmp_path)
    assert [p.kind for p in report.problems] == [R.SEEDED_SPLIT], report.summary()
    by_id = {r.image_id: r for r in records}
    assert by_id["a"].captions == ("a dog on the beach", "a brown dog runs")  # file order
    assert by_id["b"].captions == ("a cat", "a grey cat")  # whitespace collapsed, as every reader does
    assert by_id["sub/c"].image_path == os.path.join(str(tmp_path), "sub", "c.jpg")
    assert (report.num_records, report.num_captions) == (3, 5)
    assert str(tmp_path) in report.source and os.path.exists(path)


def test_csv_rows_of_one_file_are_its_captions_and_quoted_commas_are_kept(tmp_path):
    _csv(tmp_path, 'file_name,text\na.jpg,a dog runs\nb.jpg,"a cat, asleep on a chair"\na.jpg,a dog on grass\n'
                   'b.jpg,"a cat\non two lines"\n')
    records, report = read_imagefolder(tmp_path)
    by_id = {r.image_id: r for r in records}
    assert by_id["a"].captions == ("a dog runs", "a dog on grass")
    assert by_id["b"].captions == ("a cat, asleep on a chair", "a cat on two lines")
    assert report.count(R.MALFORMED_LINE) == 0


def test_csv_line_numbers_count_physical_lines(tmp_path):
    """A quoted caption spanning two lines: the row after it is named by its own first line."""
    path = _csv(tmp_path, 'file_name,text\na.jpg,"first\nsecond"\nb.jpg,\nb.jpg,a cat\n')
    _, report = read_imagefolder(tmp_path)
    problem = _only(report, R.EMPTY_CAPTION)
    assert (problem.file, problem.line) == (path, 4) and "b.jpg" in problem.message


def test_split_folders_give_train_val_and_test(tmp_path):
    for folder, names in (("train", ["a.jpg", "b.jpg"]), ("validation", ["a.jpg"]), ("test", ["t.jpg"])):
        _jsonl(tmp_path / folder, [{"file_name": n, "text": f"a photo {n} in {folder}"} for n in names])
    records, report = read_imagefolder(tmp_path)
    assert report.problems == []
    assert _splits(records) == {"train": ["train/a", "train/b"], "val": ["validation/a"], "test": ["test/t"]}
    assert records[2].image_path == os.path.join(str(tmp_path), "validation", "a.jpg")  # relative to its folder


@pytest.mark.parametrize("name", ["val", "valid", "dev"])
def test_hugging_face_names_of_the_validation_folder(tmp_path, name):
    _jsonl(tmp_path / "train", [{"file_name": "a.jpg", "text": "a dog"}])
    _jsonl(tmp_path / name, [{"file_name": "b.jpg", "text": "a cat"}])
    records, _ = read_imagefolder(tmp_path)
    assert _splits(records) == {"train": ["train/a"], "val": [f"{name}/b"]}


def test_split_folders_without_a_validation_folder_take_val_from_train(tmp_path):
    _jsonl(tmp_path / "train", [{"file_name": f"t{i}.png", "text": f"photo {i}"} for i in range(10)])
    _jsonl(tmp_path / "test", [{"file_name": "x.jpg", "text": "a test photo"}])
    records, report = read_imagefolder(tmp_path)
    # val_count(10) = 1: the train image whose split_rank("train/<name>") is smallest
    assert _splits(records)["val"] == ["train/t7"] and _splits(records)["test"] == ["test/x"]
    assert len(_splits(records)["train"]) == 9
    assert "no validation folder" in _only(report, R.SEEDED_SPLIT).message


def test_split_folder_problems_raise_naming_the_folder_or_file(tmp_path):
    _jsonl(tmp_path / "train", [{"file_name": "a.jpg", "text": "a dog"}])
    (tmp_path / "validation").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no metadata.jsonl or metadata.csv in {tmp_path / 'validation'}"):
        read_imagefolder(tmp_path)
    _jsonl(tmp_path / "validation", [{"file_name": "b.jpg", "text": "a cat"}])
    _jsonl(tmp_path / "val", [{"file_name": "c.jpg", "text": "a cow"}])
    with pytest.raises(ValueError, match="both val/ and validation/ are val folders"):
        read_imagefolder(tmp_path)
    os.rename(tmp_path / "val", tmp_path / "other")
    root_metadata = _jsonl(tmp_path, [{"file_name": "train/a.jpg", "text": "a dog"}])
    with pytest.raises(ValueError, match=f"{root_metadata}: a metadata file at the root beside the split folders"):
        read_imagefolder(tmp_path)


# The seeded split --------------------------------------------------------------------------------------------------


def test_seeded_split_counts():
    assert [val_count(n) for n in (0, 1, 2, 3, 9, 10, 19, 20, 25, 100)] == [0, 0, 1, 1, 1, 1, 1, 2, 2, 10]


def test_seeded_split_is_a_fixed_hash_of_the_path():
    """The documented rule, computed here independently, and two pinned values: a change of the salt or of the
    rule would move users' photos between the splits."""
    assert split_rank("photo00.jpg") == hashlib.sha256(b"sat_tf imagefolder split\0photo00.jpg").hexdigest()
    assert split_rank("photo00.jpg").startswith("47057c94b58a")
    names = [f"photo{i:02d}.jpg" for i in range(20)]
    assert sorted(names, key=split_rank)[:2] == ["photo19.jpg", "photo02.jpg"]


def test_seeded_split_assignment_is_deterministic_and_independent_of_line_order(tmp_path):
    entries = [{"file_name": f"photo{i:02d}.jpg", "text": f"a photo number {i}"} for i in range(20)]
    _jsonl(tmp_path / "a", entries)
    _jsonl(tmp_path / "b", entries[::-1])
    first, _ = read_imagefolder(tmp_path / "a")
    again, _ = read_imagefolder(tmp_path / "a")
    reversed_lines, _ = read_imagefolder(tmp_path / "b")
    assert _splits(first) == _splits(again) == _splits(reversed_lines)
    assert _splits(first)["val"] == ["photo02", "photo19"]  # the 2 smallest split_rank values, sorted by id
    assert len(_splits(first)["train"]) == 18 and "test" not in _splits(first)


@pytest.mark.parametrize("count, val", [(1, 0), (2, 1), (5, 1)])
def test_tiny_folders_still_get_a_val_image(tmp_path, count, val):
    _jsonl(tmp_path, [{"file_name": f"p{i}.jpg", "text": f"a photo {i}"} for i in range(count)])
    records, _ = read_imagefolder(tmp_path)
    assert len(_splits(records).get("val", [])) == val and len(records) == count


# Bad input, each named by file and line ----------------------------------------------------------------------------


def test_missing_photo_is_skipped_naming_the_line(tmp_path):
    path = _jsonl(tmp_path, [{"file_name": "a.jpg", "text": "a dog"}, {"file_name": "gone.jpg", "text": "a cat"}],
                  images=["a.jpg"])
    records, report = read_imagefolder(tmp_path)
    problem = _only(report, R.MISSING_IMAGE)
    assert (problem.file, problem.line) == (path, 2) and "gone.jpg" in problem.message
    assert [r.image_id for r in records] == ["a"]


def test_empty_text_is_skipped_naming_the_line(tmp_path):
    path = _jsonl(tmp_path, [{"file_name": "a.jpg", "text": "a dog"}, {"file_name": "a.jpg", "text": " ... "},
                             {"file_name": "b.jpg", "text": ""}])
    records, report = read_imagefolder(tmp_path)
    assert [(p.file, p.line) for p in report.of_kind(R.EMPTY_CAPTION)] == [(path, 2), (path, 3)]
    assert _only(report, R.NO_CAPTIONS).line == 3  # b.jpg had nothing else
    assert [r.image_id for r in records] == ["a"]


def test_caption_key_instead_of_text_names_the_line_and_the_allowed_keys(tmp_path):
    path = _jsonl(tmp_path, [{"file_name": "a.jpg", "text": "a dog"}, {"file_name": "b.jpg", "caption": "a cat"}])
    _, report = read_imagefolder(tmp_path)
    problem = _only(report, R.MALFORMED_LINE)
    assert (problem.file, problem.line) == (path, 2)
    assert "['caption']" in problem.message and "allowed keys: file_name, text, captions" in problem.message


def test_a_file_of_caption_keys_only_raises_naming_file_line_and_allowed_keys(tmp_path):
    path = _jsonl(tmp_path, [{"file_name": "a.jpg", "caption": "a dog"}, {"file_name": "b.jpg", "caption": "a cat"}])
    with pytest.raises(ValueError, match="allowed keys: file_name, text, captions") as error:
        read_imagefolder(tmp_path)
    assert str(error.value).startswith(f"{path}: not one of its 2 non-blank lines") and "line 1" in str(error.value)


def test_csv_caption_column_instead_of_text_raises_naming_the_allowed_columns(tmp_path):
    path = _csv(tmp_path, "file_name,caption\na.jpg,a dog\n")
    with pytest.raises(ValueError, match="no 'text' column") as error:
        read_imagefolder(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path}:1:") and "file_name, caption" in message
    assert "allowed columns: file_name, text" in message


def test_extra_columns_beside_text_are_a_note(tmp_path):
    path = _csv(tmp_path, "file_name,text,license\na.jpg,a dog,cc-by\nb.jpg,a cat,cc0\n")
    records, report = read_imagefolder(tmp_path)
    problem = _only(report, R.UNKNOWN_COLUMN)
    assert (problem.file, problem.line, problem.action) == (path, 1, "note") and "license" in problem.message
    assert len(records) == 2
    _jsonl(tmp_path / "j", [{"file_name": "a.jpg", "text": "a dog", "width": 12}])
    _, report = read_imagefolder(tmp_path / "j")
    assert _only(report, R.UNKNOWN_COLUMN).line == 1 and "width" in report.of_kind(R.UNKNOWN_COLUMN)[0].message


def test_duplicate_rows_are_skipped_naming_both_lines(tmp_path):
    path = _csv(tmp_path, "file_name,text\na.jpg,a dog runs\nb.jpg,a dog runs\na.jpg,a  dog runs\na.jpg,a dog\n")
    records, report = read_imagefolder(tmp_path)
    problem = _only(report, R.DUPLICATE_CAPTION)
    assert (problem.file, problem.line) == (path, 4) and "already on line 2" in problem.message
    assert {r.image_id: r.captions for r in records} == {"a": ("a dog runs", "a dog"), "b": ("a dog runs",)}
    json_path = _jsonl(tmp_path / "j", [{"file_name": "a.jpg", "captions": ["a cat", "a cat"]}])
    _, report = read_imagefolder(tmp_path / "j")
    assert (_only(report, R.DUPLICATE_CAPTION).file, _only(report, R.DUPLICATE_CAPTION).line) == (json_path, 1)


def test_invalid_json_on_a_line_is_skipped_naming_the_line(tmp_path):
    path = _jsonl(tmp_path, [{"file_name": "a.jpg", "text": "a dog"}, '{"file_name": "b.jpg", "text": "a cat"',
                             "", '["a.jpg", "a list"]', '{"text": "no file"}', '{"file_name": "/etc/x.jpg", '
                             '"text": "outside"}', '{"file_name": "../x.jpg", "text": "outside"}'],
                  images=["a.jpg"])
    records, report = read_imagefolder(tmp_path)
    malformed = report.of_kind(R.MALFORMED_LINE)
    assert [(p.file, p.line) for p in malformed] == [(path, n) for n in (2, 4, 5, 6, 7)]
    assert "not valid JSON" in malformed[0].message and "not an object" in malformed[1].message
    assert "no 'file_name'" in malformed[2].message and "inside the metadata file's folder" in malformed[3].message
    assert _only(report, R.BLANK_LINE).line == 3 and len(records) == 1


def test_csv_row_with_an_unquoted_comma_is_skipped_naming_the_line(tmp_path):
    path = _csv(tmp_path, "file_name,text\na.jpg,a dog, running\nb.jpg,a cat\n")
    _, report = read_imagefolder(tmp_path)
    problem = _only(report, R.MALFORMED_LINE)
    assert (problem.file, problem.line) == (path, 2) and "double quotes" in problem.message


def test_metadata_that_is_not_utf8_raises_naming_file_and_line(tmp_path):
    os.makedirs(tmp_path / "latin1")
    _image(tmp_path / "latin1" / "a.jpg")
    path = tmp_path / "latin1" / "metadata.csv"
    path.write_bytes("file_name,text\na.jpg,a dog\na.jpg,un café\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as error:
        read_imagefolder(tmp_path / "latin1")
    assert str(error.value).startswith(f"{path}:3: not UTF-8 (byte 0xe9 at column 13")
    path.write_bytes("file_name,text\na.jpg,a dog\n".encode("utf-16"))
    with pytest.raises(ValueError, match=f"{path}:1: the file is UTF-16"):
        read_imagefolder(tmp_path / "latin1")
    path.write_bytes(b"\xef\xbb\xbf" + "file_name,text\na.jpg,un café\n".encode("utf-8"))
    records, report = read_imagefolder(tmp_path / "latin1")
    assert records[0].captions == ("un café",) and _only(report, R.BOM).action == "repaired"


def test_json_escape_of_half_an_emoji_is_repaired_and_reported(tmp_path):
    path = _jsonl(tmp_path, ['{"file_name": "a.jpg", "text": "a dog \\ud83d"}'], images=["a.jpg"])
    records, report = read_imagefolder(tmp_path)
    assert records[0].captions == ("a dog \ufffd",)
    assert (_only(report, R.BAD_UTF8).file, _only(report, R.BAD_UTF8).line) == (path, 1)


def test_no_metadata_or_two_metadata_files_raise_naming_the_folder(tmp_path):
    _image(tmp_path / "a.jpg")
    with pytest.raises(FileNotFoundError, match=f"no metadata.jsonl or metadata.csv in {tmp_path}"):
        read_imagefolder(tmp_path)
    _jsonl(tmp_path, [{"file_name": "a.jpg", "text": "a dog"}])
    _csv(tmp_path, "file_name,text\na.jpg,a dog\n", images=())
    with pytest.raises(ValueError, match="has both metadata.jsonl and metadata.csv"):
        read_imagefolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_imagefolder(tmp_path / "nowhere")


def test_photos_on_no_line_are_reported(tmp_path):
    _jsonl(tmp_path, [{"file_name": "a.jpg", "text": "a dog"}], images=["a.jpg", "forgotten.png", "x/y.JPG"])
    (tmp_path / "notes.txt").write_text("not a photo")
    _, report = read_imagefolder(tmp_path)
    assert sorted(p.message.split(" ")[0] for p in report.of_kind(R.NO_CAPTIONS)) == ["forgotten.png", "x/y.JPG"]


# The check command and extraction ---------------------------------------------------------------------------------


def test_check_command_on_an_imagefolder(tmp_path, capsys):
    from sat_tf.pipelines.check import check_dataset, main

    _jsonl(tmp_path / "ok", [{"file_name": f"p{i}.jpg", "text": f"a photo of thing {i}"} for i in range(4)]
           + [{"file_name": "gone.jpg", "text": "a lost photo"}], images=[f"p{i}.jpg" for i in range(4)])
    assert main(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "train: 3 images, 3 captions" in out and "val: 1 images, 1 captions" in out
    assert "metadata.jsonl:5: missing_image: gone.jpg" in out and out.rstrip().endswith("ready for extraction")

    _jsonl(tmp_path / "one", [{"file_name": "p.jpg", "text": "a single photo"}])
    result = check_dataset(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "one")))
    assert not result.ok and "a validation/ folder" in result.errors[0]
    assert main(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "none")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_extraction_skips_and_counts_a_corrupt_photo(tmp_path):
    """The reader does not open photos; extraction skips a corrupt one with its reason (sat_tf.images)."""
    from sat_tf.pipelines.prepare import prepare_features
    from tests.robustness import fake_backbone

    root = tmp_path / "photos"
    _jsonl(root, [{"file_name": f"p{i}.jpg", "text": f"a red photo {i}"} for i in range(6)]
           + [{"file_name": "broken.jpg", "text": "a broken photo"}], images=[f"p{i}.jpg" for i in range(6)])
    (root / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    config = DataConfig(dataset="imagefolder", data_dir=str(root), encoder_layer="stage5", image_size=64,
                        min_count=1)
    with pytest.MonkeyPatch.context() as patch:
        fake_backbone.install(patch)
        manifest = prepare_features(config, str(tmp_path / "features"), progress=False)
    images = sum(split["images"] for split in manifest["splits"].values())
    assert images == 6 and [item["image_id"] for item in manifest["skipped"]] == ["broken"]
    assert "cannot identify image file" in manifest["skipped"][0]["reason"]
    val_skipped = sum(item["split"] == "val" for item in manifest["skipped"])
    assert manifest["splits"].get("val", {"images": 0})["images"] + val_skipped == val_count(7) == 1
    assert manifest["dataset"] == "imagefolder" and list(manifest["skipped_counts"].values()) == [1]
