"""`python -m sat_tf.caption` at scale: folders and globs, streaming in batches, --out JSON Lines / CSV / TSV,
per-file errors that never stop the run, and one attention figure per image in a folder. Runs a tiny trained work
dir with the fake backbone (tests/robustness/fake_backbone.py) standing in for the CNN."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest

from sat_tf.caption import main as caption_main
from tests.robustness import fake_backbone, tiny_run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tiny_run.trained_workdir(str(tmp_path_factory.mktemp("caption")))


@pytest.fixture
def images(workdir, tmp_path):
    """A folder of 5 scene images (one in a subfolder, one sharing another's name), plus a corrupt file in it."""
    source = os.path.join(os.path.dirname(workdir), "features", "scenes", "images")
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for k in range(4):
        shutil.copy(os.path.join(source, f"val_{k:05d}.png"), folder / f"val_{k:05d}.png")
    shutil.copy(os.path.join(source, "val_00004.png"), folder / "more" / "val_00000.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_a_folder_streams_to_jsonl_with_per_file_errors_and_figures(workdir, images, tmp_path, capsys,
                                                                    monkeypatch):
    fake_backbone.install(monkeypatch)
    out, figures = tmp_path / "captions.jsonl", tmp_path / "figures"
    code = caption_main(["--workdir", workdir, str(images), str(tmp_path / "nothing" / "*.png"),
                         "--beam-size", "2", "--batch-size", "2", "--out", str(out),
                         "--attention-map", str(figures)])
    captured = capsys.readouterr()
    assert code == 1  # two inputs failed; every other image was still captioned
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_path = {os.path.relpath(r["path"], images) if not r["path"].startswith(str(tmp_path / "nothing")) else "glob":
               r for r in records}
    assert sorted(by_path) == ["broken.jpg", "glob", "more/val_00000.png", "val_00000.png", "val_00001.png",
                               "val_00002.png", "val_00003.png"]
    assert by_path["glob"]["error"] == "no image file matches"
    assert by_path["broken.jpg"]["error"] and by_path["broken.jpg"]["caption"] == ""
    good = [r for r in records if not r["error"]]
    assert len(good) == 5 and all(r["caption"] and r["log_prob"] < 0 for r in good)
    # one figure per captioned image; two images named val_00000.png get distinct figures
    assert sorted(os.listdir(figures)) == ["val_00000.png", "val_00000_2.png", "val_00001.png", "val_00002.png",
                                           "val_00003.png"]
    assert "broken.jpg\terror: " in captured.err and "nothing/*.png\terror: no image file matches" in captured.err
    assert "caption [" in captured.err and "6/6 images" in captured.err  # the progress bar, on stderr
    assert "5 image(s) captioned, 2 failed" in captured.out


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv_records_match_the_printed_captions(workdir, images, tmp_path, capsys, monkeypatch, suffix,
                                                        delimiter):
    fake_backbone.install(monkeypatch)
    pattern = str(images / "val_0000[12].png")
    assert caption_main(["--workdir", workdir, pattern, "--beam-size", "2", "--no-progress"]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    out = tmp_path / f"captions{suffix}"
    assert caption_main(["--workdir", workdir, pattern, "--beam-size", "2", "--out", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    assert [r["path"] for r in rows] == sorted(printed)
    assert all(r["caption"] == printed[r["path"]] and r["error"] == "" and float(r["log_prob"]) < 0 for r in rows)


def test_captions_stream_a_batch_at_a_time(workdir, images, monkeypatch):
    """The paths are read lazily: the first results come before the input is exhausted, and at most one batch of
    files is held at a time (the memory of the run is flat in the number of images)."""
    from sat_tf.inference.image_captioner import ImageCaptioner
    from sat_tf.training.workdir import load_captioner

    fake_backbone.install(monkeypatch)
    captioner = ImageCaptioner(load_captioner(workdir), weights=None)
    files = sorted(str(p) for p in images.glob("val_*.png"))
    consumed = []

    def paths():
        for p in files:
            consumed.append(p)
            yield p

    stream = captioner.caption_stream(paths(), beam_size=2, batch_size=2)
    first = next(stream)
    assert len(consumed) == 2 and first.path == files[0] and first.caption
    rest = list(stream)
    assert [r.path for r in [first, *rest]] == files and len(consumed) == 4
    assert [r.caption for r in [first, *rest]] == [r.caption for r in captioner.caption(files, beam_size=2)]


def test_one_figure_file_for_several_images_is_refused_before_any_work(images, tmp_path, capsys):
    assert caption_main(["--workdir", str(tmp_path / "no-such-workdir"), str(images),
                         "--attention-map", str(tmp_path / "figure.png")]) == 1
    assert "names one file but 6 images were given: name a folder" in capsys.readouterr().err
