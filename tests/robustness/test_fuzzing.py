"""Property tests under hypothesis (derandomized: the same examples on every run, no example database): image bytes
and caption files that no one wrote by hand must never crash the readers with anything but their documented
errors, and the readers must account for every line or entry they are given.

    load_image(bytes)               returns RGB uint8 (H, W, 3) or raises ImageError, nothing else
    normalize_caption(text/bytes)   never raises; its output is normalised (idempotent, single spaces)
    read_flickr8k(token file)       never raises on content; lines = kept captions + skipped lines
    read_coco / read_karpathy       raise only ValueError (wrong schema); annotations = kept + reported
"""

from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from sat_tf.images.load import ImageError, load_image
from sat_tf.pipelines.sources import read_coco, read_flickr8k, read_karpathy
from sat_tf.pipelines.sources import record as R
from sat_tf.text.vocabulary import normalize_caption
from tests.text.helpers import normalize_captions

# Damaged TIFF headers make Pillow warn ("Tag data larger than file") while it decodes what it can: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Images -------------------------------------------------------------------------------------------------------------


def _encoded(fmt: str, **kwargs) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if fmt == "GIF":
        image = image.convert("P")
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


SEEDS = {"PNG": _encoded("PNG"), "JPEG": _encoded("JPEG", quality=80), "GIF": _encoded("GIF"),
         "WEBP": _encoded("WEBP", quality=80), "BMP": _encoded("BMP"), "TIFF": _encoded("TIFF"),
         "JPEG_EXIF": _encoded("JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00"
                                            b"\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00")}
MAX_PIXELS = 1_000_000  # a mutated header may claim any size: keep what a decode may allocate small


def _assert_image_or_image_error(data: bytes, draft_size) -> None:
    try:
        image = load_image(data, max_pixels=MAX_PIXELS, draft_size=draft_size)
    except ImageError as e:
        assert e.path == "<bytes>" and e.reason
        event(f"ImageError: {e.reason.split(' (')[0].split(':')[0]}")
        return
    event("decoded")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1


@FUZZ
@given(data=st.binary(max_size=1024), draft_size=st.sampled_from([None, 32]))
def test_load_image_on_random_bytes(data, draft_size):
    _assert_image_or_image_error(data, draft_size)


@FUZZ
@given(fmt=st.sampled_from(sorted(SEEDS)), cut=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
       flips=st.lists(st.tuples(st.one_of(st.floats(0.0, 0.1), st.floats(0.1, 1.0, exclude_max=True)),
                                st.integers(0, 255)), max_size=3),
       draft_size=st.sampled_from([None, 32]))
def test_load_image_on_damaged_real_files(fmt, cut, flips, draft_size):
    """A real PNG / JPEG / GIF / WebP / BMP / TIFF file with bytes overwritten (headers included) and cut short."""
    data = bytearray(SEEDS[fmt])
    for where, value in flips:
        data[int(where * len(data))] = value
    _assert_image_or_image_error(bytes(data[: max(1, int(round(cut * len(data))))]), draft_size)


# Caption normalisation -------------------------------------------------------------------------------------------


def _assert_normalized(text: str) -> None:
    assert text == text.strip() and "  " not in text
    assert not any(ch.isspace() and ch != " " for ch in text), repr(text)


@FUZZ
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_normalize_caption_on_any_text(captions):
    normalized = normalize_captions(captions)
    assert len(normalized) == len(captions)
    for raw, text in zip(captions, normalized):
        _assert_normalized(text)
        if R.has_words(raw):  # what the readers keep as a caption never normalises to nothing
            assert text, f"{raw!r} has words but normalises to an empty caption"
    assert normalize_captions(normalized) == normalized  # idempotent


@FUZZ
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
def test_normalize_caption_on_any_bytes(captions):
    """Bytes that are not UTF-8 (what a graph may be fed) are normalised, never an error."""
    out = [value.decode("utf-8") for value in normalize_caption(captions).numpy().tolist()]
    for text in out:
        _assert_normalized(text)


# Caption files ------------------------------------------------------------------------------------------------------

NAMES = ["a.jpg", "b.jpg", "c c.jpg", "d#1.jpg"]
_no_newline = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
_caption = st.one_of(st.text(max_size=30), st.sampled_from(["", " . ", "A dog runs .", "\u3164", "\t", "a,b\tc"]))
_structured_line = st.builds(lambda name, sep, number, caption: f"{name}{sep}{number}\t{caption}".encode(),
                             st.sampled_from(NAMES), st.sampled_from(["#", "#", "", "##"]),
                             st.sampled_from(["0", "1", "2", "x", "", "10"]), _caption)
_line = st.one_of(_structured_line, _structured_line, _no_newline,
                  _caption.map(lambda c: c.encode()).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ")))
LINE_KINDS = (R.BLANK_LINE, R.MALFORMED_LINE, R.DUPLICATE_CAPTION_ID, R.EMPTY_CAPTION)


@FUZZ
@given(lines=st.lists(_line, max_size=12), bom=st.booleans(), newline=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_flickr8k_reader_accounts_for_every_line(lines, bom, newline):
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + newline for line in lines)
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "Flickr8k_text"))
        with open(os.path.join(root, "Flickr8k_text", "Flickr8k.token.txt"), "wb") as f:
            f.write(data)
        records, report = read_flickr8k(root, check_images=False, unassigned_split="train")
    skipped_lines = sum(report.count(kind) for kind in LINE_KINDS)
    assert report.num_captions + skipped_lines == len(lines), report.summary()
    for record in records:
        assert record.image_id and all(R.has_words(c) and c == " ".join(c.split()) for c in record.captions)


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
                         st.text(max_size=8))
_json_any = st.recursive(_json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.text(max_size=5), inner,
                                                                               max_size=3)), max_leaves=6)
_surrogate_text = st.text(alphabet=st.one_of(st.characters(max_codepoint=0x2FF),
                                             st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
                          max_size=20)
# Mostly well-formed entries (so that the checks past the schema run), some of any shape.
_coco_image = st.one_of(st.fixed_dictionaries({"id": st.integers(0, 2), "file_name": st.sampled_from(NAMES)}),
                        st.fixed_dictionaries({"id": st.one_of(st.integers(0, 4), _json_any),
                                               "file_name": st.one_of(st.sampled_from(NAMES), _json_any)}),
                        _json_any)
_coco_annotation = st.one_of(
    st.fixed_dictionaries({"id": st.integers(0, 5), "image_id": st.integers(0, 2),
                           "caption": st.one_of(_caption, _surrogate_text)}),
    st.fixed_dictionaries({"id": st.one_of(st.integers(0, 5), _json_any), "image_id": st.one_of(st.integers(0, 4),
                                                                                               _json_any),
                           "caption": st.one_of(_caption, _surrogate_text, _json_any)}), _json_any)


def _write_json(payload) -> str:
    handle, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(handle, "w") as f:
        f.write(json.dumps(payload, ensure_ascii=True))  # lone surrogates become "\ud83d" escapes
    return path


@FUZZ
@given(images=st.lists(_coco_image, max_size=5), annotations=st.lists(_coco_annotation, max_size=8))
def test_coco_reader_accounts_for_every_annotation(images, annotations):
    path = _write_json({"images": images, "annotations": annotations})
    try:
        records, report = read_coco(path, "/nonexistent", split="train", check_images=False)
    except ValueError as e:
        assert path in str(e) and "none of the" in str(e)  # not one well-formed entry: the schema is wrong
        return
    finally:
        os.remove(path)
    per_annotation = [p for p in report.problems if p.message.startswith("annotations[")
                      and p.kind in (R.MALFORMED_ENTRY, R.DUPLICATE_CAPTION_ID, R.UNKNOWN_IMAGE, R.EMPTY_CAPTION)]
    assert report.num_captions + len(per_annotation) == len(annotations), report.summary()
    normalize_captions([c for r in records for c in r.captions] or [""])  # every kept caption can be encoded


_sentence = st.one_of(st.fixed_dictionaries({"raw": st.one_of(_caption, _surrogate_text, _json_any),
                                             "sentid": st.one_of(st.integers(0, 5), _json_any)}),
                      st.fixed_dictionaries({"tokens": st.one_of(st.lists(st.text(max_size=6), max_size=4),
                                                                 _json_any)}), _json_any)
_karpathy_image = st.one_of(st.fixed_dictionaries({
    "filename": st.one_of(st.sampled_from(NAMES), _json_any), "split": st.sampled_from(["train", "val", "restval",
                                                                                       "dev", 3]),
    "sentences": st.one_of(st.lists(_sentence, max_size=4), _json_any)},
    optional={"cocoid": st.one_of(st.integers(0, 4), _json_any), "filepath": st.one_of(st.just("val2014"),
                                                                                       _json_any)}), _json_any)


@FUZZ
@given(images=st.lists(_karpathy_image, max_size=6))
def test_karpathy_reader_raises_only_for_a_wrong_schema(images):
    path = _write_json({"images": images, "dataset": "coco"})
    try:
        records, report = read_karpathy(path, "/nonexistent", check_images=False)
    except ValueError as e:
        assert path in str(e) and "none of the" in str(e)
        return
    finally:
        os.remove(path)
    assert report.num_records == len(records)
    normalize_captions([c for r in records for c in r.captions] or [""])


@pytest.mark.parametrize("reader", ["coco", "karpathy"])
def test_json_readers_refuse_a_top_level_of_the_wrong_type(reader, tmp_path):
    path = tmp_path / "x.json"
    payloads = [[], "text", 3, None, {"images": {}}] + ([{"images": [], "annotations": 5}] if reader == "coco" else [])
    for payload in payloads:
        path.write_text(json.dumps(payload))
        with pytest.raises(ValueError, match=str(path)):
            if reader == "coco":
                read_coco(path, tmp_path, split="train", check_images=False)
            else:
                read_karpathy(path, tmp_path, check_images=False)
