"""Reader of the Karpathy splits (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`).

    {"images": [{"filepath": "val2014",            (COCO only: sub-folder of the image root)
                 "filename": "COCO_val2014_000000391895.jpg",
                 "split": "train" | "val" | "test" | "restval",
                 "cocoid": 391895,                  (COCO only; Flickr files have "imgid", a running index)
                 "sentences": [{"raw": "A man ...", "tokens": ["a", "man", ...], "sentid": 770337}, ...]}, ...],
     "dataset": "coco"}

Captions come from "raw" (normalised later by `sat_tf.text`, like every other reader's), or from the joined
"tokens" where "raw" is missing. An image id is the "cocoid" where there is one, else the file name without
extension (which is the id the Flickr8k reader gives). "restval" (the COCO val2014 images outside Karpathy's val
and test) becomes "train" by default, as in most papers that use these splits.
"""

from __future__ import annotations

import os

from sat_tf.pipelines.sources.record import (DUPLICATE_CAPTION_ID, DUPLICATE_IMAGE, EMPTY_CAPTION, MALFORMED_ENTRY,
                                             SPLITS, UNKNOWN_SPLIT, CaptionRecord, ImageFiles, ReadReport,
                                             clean_caption, has_words, missing_key, keep_image, raise_if_all_malformed,
                                             read_json, require_keys)

WHAT = "a Karpathy split file (dataset_*.json)"


def read_karpathy(dataset_json: str | os.PathLike, images_dir: str | os.PathLike, *, restval_to_train: bool = True,
                  check_images: bool = True) -> tuple[list[CaptionRecord], ReadReport]:
    """Reads a Karpathy split file.

    Args:
        dataset_json: the split JSON.
        images_dir: image root: IMAGES_DIR/filepath/filename (COCO) or IMAGES_DIR/filename (Flickr).
        restval_to_train: bool. Return "restval" images as "train" (True) or as "restval".
        check_images: bool. Skip (MISSING_IMAGE) images whose file is absent.

    Returns:
        (records in file order, report).

    Raises:
        FileNotFoundError: the JSON file or (with check_images) the image folder does not exist.
        ValueError: the file is not JSON, has no "images" array, or not one well-formed entry in it; the message
            names the file and key.
    """
    path = os.fspath(dataset_json)
    images_dir = os.fspath(images_dir)
    report = ReadReport(f"karpathy {path}")
    images = ImageFiles(images_dir) if check_images else None
    data = read_json(path, report, WHAT)
    require_keys(data, path, WHAT, images=list)

    records = []
    seen_images: dict[str, str] = {}
    seen_sentences: dict[object, str] = {}
    num_good = 0
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        problem = missing_key(entry, ("filename", "split", "sentences"))
        if problem is None:
            for key, expected, name in (("filename", str, "string"), ("split", str, "string"),
                                        ("sentences", list, "array"), ("filepath", str, "string")):
                if key in entry and not isinstance(entry[key], expected):
                    problem = f"has a {key!r} that is not a JSON {name}"
                    break
        if problem is not None:
            report.add(MALFORMED_ENTRY, path, None, f"{where} {problem}")
            continue
        num_good += 1
        split = "train" if entry["split"] == "restval" and restval_to_train else entry["split"]
        if split not in SPLITS:
            report.add(UNKNOWN_SPLIT, path, None, f"{where}: split {entry['split']!r} is not one of {SPLITS}")
            continue
        cocoid = entry.get("cocoid")
        image_id = str(cocoid) if isinstance(cocoid, (int, str)) else os.path.splitext(entry["filename"])[0]
        if image_id in seen_images:
            report.add(DUPLICATE_IMAGE, path, None, f"{where}: image {image_id!r} already in {seen_images[image_id]}")
            continue
        seen_images[image_id] = where
        captions = _captions(entry["sentences"], where, path, seen_sentences, report)
        image_path = os.path.join(images_dir, entry.get("filepath", ""), entry["filename"])
        keep_image(records, report, path, where, image_id, image_path, captions, split, images)
    raise_if_all_malformed(report, path, "images", len(data["images"]), num_good, WHAT)
    report.finish(records)
    return records, report


def _captions(sentences: list, where: str, path: str, seen: dict[object, str], report: ReadReport) -> list[str]:
    """The usable captions of one image's "sentences", reporting the others."""
    captions = []
    for k, sentence in enumerate(sentences):
        at = f"{where}.sentences[{k}]"
        if not isinstance(sentence, dict):
            report.add(MALFORMED_ENTRY, path, None, f"{at} is a JSON {type(sentence).__name__}, not an object")
            continue
        raw = sentence.get("raw")
        tokens = sentence.get("tokens")
        if not isinstance(raw, str):
            if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
                raw = " ".join(tokens)
            else:
                report.add(MALFORMED_ENTRY, path, None, f"{at} has neither a string 'raw' nor a 'tokens' list")
                continue
        sentid = sentence.get("sentid")
        if isinstance(sentid, (int, str)):
            if sentid in seen:
                report.add(DUPLICATE_CAPTION_ID, path, None, f"{at}: sentid {sentid!r} already used by {seen[sentid]}")
                continue
            seen[sentid] = at
        caption = clean_caption(raw)
        if not has_words(caption):
            report.add(EMPTY_CAPTION, path, None, f"{at}: caption has no words: {caption!r}")
            continue
        captions.append(caption)
    return captions
