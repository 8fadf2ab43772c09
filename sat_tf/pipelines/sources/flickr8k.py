"""Reader of Flickr8k in its official layout (Hodosh, Young and Hockenmaier, JAIR 2013).

    ROOT/Flicker8k_Dataset/IMAGE.jpg                 (the dataset's own spelling "Flicker")
    ROOT/Flickr8k_text/Flickr8k.token.txt            IMAGE.jpg#N<TAB>caption, N = 0..4
    ROOT/Flickr8k_text/Flickr_8k.trainImages.txt     one image file name a line; likewise devImages, testImages

Split files are optional: a missing one is a note in the report, and an image listed in no split file is skipped
(NO_SPLIT) unless `unassigned_split` names a split to put it in. The "dev" split is returned as "val", the name
the other readers use. An image's captions are ordered by N; its id is the file name without extension.
"""

from __future__ import annotations

import os

from sat_tf.pipelines.sources.record import (BLANK_LINE, DUPLICATE_CAPTION_ID, DUPLICATE_IMAGE, EMPTY_CAPTION,
                                             MALFORMED_LINE, MISSING_IMAGE, MISSING_SPLIT_FILE, NO_CAPTIONS, NO_SPLIT,
                                             SPLIT_CONFLICT, SPLITS, TAB_IN_CAPTION, UNKNOWN_IMAGE, CaptionRecord,
                                             ImageFiles, ReadReport, clean_caption, has_words, read_lines)

IMAGES_DIR = "Flicker8k_Dataset"
TEXT_DIR = "Flickr8k_text"
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}


def read_flickr8k(root: str | os.PathLike, *, images_dir: str | os.PathLike | None = None,
                  text_dir: str | os.PathLike | None = None, unassigned_split: str | None = None,
                  check_images: bool = True) -> tuple[list[CaptionRecord], ReadReport]:
    """Reads Flickr8k captions and splits.

    Args:
        root: the dataset folder (holding Flicker8k_Dataset/ and Flickr8k_text/).
        images_dir: image folder, if not ROOT/Flicker8k_Dataset.
        text_dir: text folder, if not ROOT/Flickr8k_text.
        unassigned_split: None to skip images listed in no split file (counted as NO_SPLIT), or the split
            ("train", "val", "test") to put them in.
        check_images: bool. Skip (MISSING_IMAGE) captions whose image file is absent.

    Returns:
        (records sorted by split then file name, report).

    Raises:
        FileNotFoundError: the token file or (with check_images) the image folder does not exist.
    """
    if unassigned_split is not None and unassigned_split not in SPLITS:
        raise ValueError(f"unassigned_split must be None or one of {SPLITS}, got {unassigned_split!r}")
    root = os.fspath(root)
    images_dir = os.fspath(images_dir) if images_dir is not None else os.path.join(root, IMAGES_DIR)
    text_dir = os.fspath(text_dir) if text_dir is not None else os.path.join(root, TEXT_DIR)
    token_file = os.path.join(text_dir, TOKEN_FILE)
    report = ReadReport(f"flickr8k {token_file}")
    images = ImageFiles(images_dir) if check_images else None

    captions, first_line = _read_tokens(token_file, report)
    split_of = _read_splits(text_dir, set(first_line), token_file, report)

    records = []
    for name in sorted(first_line):
        where = (token_file, first_line[name])
        split = split_of.get(name, unassigned_split)
        if split is None:
            report.add(NO_SPLIT, *where, f"{name} is in no split file ({', '.join(SPLIT_FILES.values())})")
        elif not captions.get(name):
            report.add(NO_CAPTIONS, *where, f"{name} has no usable caption")
        elif images is not None and not images.exists(os.path.join(images_dir, name)):
            report.add(MISSING_IMAGE, *where, f"{name} is not in {images_dir}")
        else:
            by_number = captions[name]
            records.append(CaptionRecord(image_id=os.path.splitext(name)[0],
                                         image_path=os.path.join(images_dir, name),
                                         captions=tuple(by_number[n] for n in sorted(by_number)), split=split))
    records.sort(key=lambda r: SPLITS.index(r.split))  # stable: file-name order within a split
    report.finish(records)
    return records, report


def _read_tokens(token_file: str, report: ReadReport) -> tuple[dict[str, dict[int, str]], dict[str, int]]:
    """Parses IMAGE#N<TAB>caption lines -> ({image: {N: caption}}, {image: first line number})."""
    captions: dict[str, dict[int, str]] = {}
    first_line: dict[str, int] = {}
    seen: dict[tuple[str, int], int] = {}
    for number, line in read_lines(token_file, report):
        if not line.strip():
            report.add(BLANK_LINE, token_file, number, "blank line")
            continue
        if "\t" not in line:
            report.add(MALFORMED_LINE, token_file, number, f"no tab between caption id and caption: {line[:60]!r}")
            continue
        key, caption = line.split("\t", 1)
        key = key.strip()
        name, sep, n = key.rpartition("#")
        if not sep or not name or not n.isdigit():
            report.add(MALFORMED_LINE, token_file, number, f"caption id {key[:60]!r} is not IMAGE#N")
            continue
        if "\t" in caption:
            report.add(TAB_IN_CAPTION, token_file, number, "tab inside the caption turned into a space", "repaired")
        first_line.setdefault(name, number)
        if (name, int(n)) in seen:
            report.add(DUPLICATE_CAPTION_ID, token_file, number,
                       f"caption id {key!r} already on line {seen[name, int(n)]}")
            continue
        seen[name, int(n)] = number
        caption = clean_caption(caption)
        if not has_words(caption):
            report.add(EMPTY_CAPTION, token_file, number, f"caption {key!r} has no words: {caption!r}")
            continue
        captions.setdefault(name, {})[int(n)] = caption
    return captions, first_line


def _read_splits(text_dir: str, known: set[str], token_file: str, report: ReadReport) -> dict[str, str]:
    """Reads the split files that exist -> {image file name: split}."""
    split_of: dict[str, str] = {}
    for split, file_name in SPLIT_FILES.items():
        path = os.path.join(text_dir, file_name)
        if not os.path.isfile(path):
            report.add(MISSING_SPLIT_FILE, path, None, f"no {split} split file", "note")
            continue
        listed: dict[str, int] = {}
        for number, line in read_lines(path, report):
            name = line.strip()
            if not name:
                report.add(BLANK_LINE, path, number, "blank line")
            elif name in listed:
                report.add(DUPLICATE_IMAGE, path, number, f"{name} already on line {listed[name]}")
            elif name in split_of:
                report.add(SPLIT_CONFLICT, path, number, f"{name} is already in the {split_of[name]} split; kept there")
            elif name not in known:
                report.add(UNKNOWN_IMAGE, path, number, f"{name} has no caption in {token_file}")
            else:
                listed[name] = number
                split_of[name] = split
    return split_of
