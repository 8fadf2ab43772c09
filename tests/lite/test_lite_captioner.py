"""The LiteRT runtime on a real export, with no TensorFlow: the float32 models give the captions TensorFlow's decoder
gives (greedy, beam search, n-gram blocking; recorded by `tests.lite.make_model`), int8 mostly agrees, decoding
defaults come from config.json, and `python -m sat_tf.lite caption` prints, writes and reports errors as
`python -m sat_tf.caption` does.

Shapes: W words of a caption, L locations.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from sat_tf.lite import LiteCaptioner
from sat_tf.lite.__main__ import main


def _name(path: str) -> str:
    return os.path.basename(path)


def test_defaults_come_from_config_json(lite_model):
    config = json.load(open(os.path.join(lite_model, "config.json")))
    captioner = LiteCaptioner(lite_model)
    assert captioner.variant == "int8"  # the default where it was exported
    assert captioner.beam_size == config["train"]["beam_size"] == 3
    assert captioner.no_repeat_ngram_size == config["export"]["no_repeat_ngram_size"]
    assert captioner.max_tokens == config["export"]["max_tokens"]
    assert captioner.image_size == config["export"]["image_size"]
    assert captioner.decoding == "steps" and captioner.model_path.endswith("decoder_steps_int8.tflite")
    one_call = LiteCaptioner(lite_model, beam_size=1)
    assert one_call.decoding == "caption" and one_call.model_path.endswith("captioner_int8.tflite")


@pytest.mark.parametrize("setting", ["beam1", "beam3", "beam3_blocked", "beam1_blocked"])
def test_float32_captions_are_tensorflows(lite_model, expected, photos, setting):
    beam_size, length_penalty, ngram = expected["settings"][setting]
    captioner = LiteCaptioner(lite_model, variant="float32", beam_size=beam_size, length_penalty=length_penalty,
                              no_repeat_ngram_size=ngram)
    results = captioner.caption(photos, batch_size=3)
    assert {_name(r.path): r.caption for r in results} == expected["captions"][setting]
    for result in results:  # attention per word: (W, L), each a distribution over the locations
        assert result.error is None and result.alpha.shape[0] == len(result.words) > 0
        np.testing.assert_allclose(result.alpha.sum(-1), 1.0, atol=1e-4)
        assert np.isfinite(result.log_prob) and result.log_prob < 0


def test_blocking_leaves_no_repeated_word(lite_model, photos):
    for result in LiteCaptioner(lite_model, variant="float32", no_repeat_ngram_size=1).caption(photos):
        assert len(set(result.words)) == len(result.words), result.caption


def test_int8_mostly_agrees_with_float32(lite_model, expected, photos):
    """Dynamic-range int8 approximates float32; on this decisive model it keeps most captions."""
    for setting, beam_size in (("beam1", 1), ("beam3", 3)):
        got = {_name(r.path): r.caption for r in LiteCaptioner(lite_model, "int8", beam_size=beam_size).caption(photos)}
        agreement = np.mean([got[name] == caption for name, caption in expected["captions"][setting].items()])
        assert agreement >= 0.75, (setting, agreement)


def test_bad_settings_and_folders_are_refused_with_the_reason(lite_model, tmp_path):
    with pytest.raises(ValueError, match="variant must be one of"):
        LiteCaptioner(lite_model, variant="int4")
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        LiteCaptioner(lite_model, beam_size=0)
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        LiteCaptioner(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"export": {"format": "saved_model"}}))
    with pytest.raises(ValueError, match="not a TFLite one"):
        LiteCaptioner(str(tmp_path))


def test_command_prints_one_line_per_photo(lite_model, expected, photos, capsys):
    assert main(["caption", "--model", lite_model, "--variant", "float32", *photos]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{p}\t{expected['captions']['beam3'][_name(p)]}" for p in photos]
    assert "8 image(s) captioned, 0 failed" in err and "beam 3" in err


def test_command_flags_change_the_decoding(lite_model, expected, photos, capsys):
    assert main(["caption", "--model", lite_model, "--variant", "float32", "--beam-size", "3",
                 "--length-penalty", "0.5", "--no-repeat-ngram-size", "1", "--threads", "1", *photos]) == 0
    out, _ = capsys.readouterr()
    assert dict(line.split("\t") for line in out.splitlines()) == {
        p: expected["captions"]["beam3_blocked"][_name(p)] for p in photos}
    assert main(["caption", "--model", lite_model, "--variant", "float32", "--beam-size", "1", photos[0]]) == 0
    out, err = capsys.readouterr()
    assert out == f"{photos[0]}\t{expected['captions']['beam1'][_name(photos[0])]}\n"
    assert "captioner_float32.tflite: greedy in the model" in err


def test_bad_files_are_error_lines_that_never_stop_the_others(lite_model, photos, tmp_path, capsys):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(photos[1], "rb").read()[:300])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    code = main(["caption", "--model", lite_model, photos[0], str(truncated), str(text), str(missing), photos[2],
                 str(tmp_path / "nothing*.jpg")])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == [photos[0], photos[2]]
    assert f"{truncated}\terror: truncated image" in err
    assert f"{text}\terror: cannot identify image file" in err
    assert f"{missing}\terror: cannot read file" in err
    assert f"{tmp_path / 'nothing*.jpg'}\terror: no image file matches" in err
    assert "2 image(s) captioned, 4 failed" in err


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_out_writes_one_record_per_image(lite_model, expected, photos, tmp_path, suffix, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    out_file = tmp_path / f"captions{suffix}"
    code = main(["caption", "--model", lite_model, "--variant", "float32", "--out", str(out_file), photos[0],
                 str(bad)])
    stdout, _ = capsys.readouterr()
    assert code == 1 and f"records: {out_file}" in stdout
    if suffix == ".jsonl":
        records = [json.loads(line) for line in out_file.read_text().splitlines()]
    else:
        records = list(csv.DictReader(out_file.open(), delimiter="\t" if suffix == ".tsv" else ","))
    assert [r["path"] for r in records] == [photos[0], str(bad)]
    assert records[0]["caption"] == expected["captions"]["beam3"][_name(photos[0])] and not records[0]["error"]
    assert records[1]["caption"] == "" and records[1]["error"] == "empty file (0 bytes)"


def test_a_folder_is_captioned_file_by_file(lite_model, photos, capsys):
    assert main(["caption", "--model", lite_model, os.path.dirname(photos[0])]) == 0
    out, _ = capsys.readouterr()
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == sorted(photos)


def test_command_refuses_a_folder_that_is_no_export(tmp_path, capsys):
    assert main(["caption", "--model", str(tmp_path), "photo.jpg"]) == 1
    assert "config.json does not exist" in capsys.readouterr().err
