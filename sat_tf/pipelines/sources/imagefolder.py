"""Reader of your own photos in the Hugging Face `imagefolder` layout: images plus one metadata file of captions.

    ROOT/metadata.jsonl      {"file_name": "x.jpg", "text": "a dog on a beach"}            one caption a line, or
                             {"file_name": "x.jpg", "captions": ["a dog ...", "a brown dog ..."]}
    ROOT/metadata.csv        file_name,text         header, then one caption a row ("quote, captions with commas")
    ROOT/x.jpg ...           file_name is relative to the metadata file's folder (sub-folders allowed: "cats/x.jpg")

Several captions of one photo are normal for captioning: every line (or row) naming the same file_name adds a
caption, and a line repeating a caption that the same file already has is a duplicate (skipped, with the line of
the first one). Hugging Face reads each row as one example; here the rows of one image become one record, so its
captions are the references of one image in scoring.

Splits: sub-folders `train/`, `validation/` and `test/` (also Hugging Face's other names: `training/`; `valid/`,
`val/`, `dev/`; `testing/`, `eval/`, `evaluation/`), each with its own metadata file, give the splits "train",
"val" and "test". Without them, the folder's images are split by a fixed hash, the same on every run and machine:
`val_count(n)` = n // 10 images (at least 1 once there are 2) go to "val", namely those whose
sha256("sat_tf imagefolder split\\0" + path) is smallest (path: the image's path relative to ROOT, "/"-separated),
the rest to "train"; there is no test split. The same rule picks the val images from `train/` when there are split
folders but no validation folder. Adding photos moves an image between the splits only where its hash crosses the
new boundary.

Bad lines are skipped and reported with file and line (as every reader does, `record.ReadReport`): invalid JSON,
an entry that is not an object or lacks "file_name", a caption key other than "text" / "captions" (the message
lists the allowed ones), a caption without words, a duplicate caption, a photo that is not there; a photo in the
folder that no line names is reported too. Fatal, raised with the file (and line): no metadata file, both a
metadata.jsonl and a metadata.csv in one folder, a metadata file that is not UTF-8 (saving it as UTF-8 fixes it;
no caption is half-read with replacement characters), a CSV header without the "file_name" and "text" columns, a
file in which not one line is usable. Image files are not opened here: a corrupt photo is skipped and counted at
extraction (`sat_tf.pipelines.extract`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os

from sat_tf.pipelines.sources.record import (BAD_UTF8, BLANK_LINE, BOM, DUPLICATE_CAPTION, EMPTY_CAPTION,
                                             MALFORMED_LINE, MISSING_IMAGE, NO_CAPTIONS, SEEDED_SPLIT, SPLITS,
                                             UNKNOWN_COLUMN, CaptionRecord, ImageFiles, ReadReport, clean_caption,
                                             has_words)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
JSONL_KEYS = ("file_name", "text", "captions")
CSV_COLUMNS = ("file_name", "text")
# Hugging Face's split keywords (datasets.data_files.SPLIT_KEYWORDS) as folder names -> sat_tf split names.
SPLIT_FOLDERS = {"train": "train", "training": "train",
                 "validation": "val", "valid": "val", "val": "val", "dev": "val",
                 "test": "test", "testing": "test", "eval": "test", "evaluation": "test"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_SALT = "sat_tf imagefolder split\0"


def read_imagefolder(root: str | os.PathLike, *, check_images: bool = True) -> tuple[list[CaptionRecord], ReadReport]:
    """Reads an imagefolder dataset (module docstring: layout, splits, what is skipped and what raises).

    Args:
        root: the dataset folder (metadata file and photos, or train/ validation/ test/ folders holding them).
        check_images: bool. Skip (MISSING_IMAGE) captions whose photo is absent, and report photos that no
            metadata line names.

    Returns:
        (records sorted by split then path, report). An image id is the photo's path relative to `root` without
        its extension ("train/cats/x"), so ids are unique across splits.

    Raises:
        FileNotFoundError: `root` or a split folder has no metadata file.
        ValueError: naming the file (and line): two metadata files in one folder, two folders for one split, a
            metadata file at the root beside split folders, a metadata file that is not UTF-8 or has no usable
            line, a CSV header without the file_name and text columns.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    folders = _split_folders(root)
    report = ReadReport(f"imagefolder {root}")
    records: list[CaptionRecord] = []
    if folders:
        for split, folder in folders.items():
            records.extend(_read_folder(root, folder, split, report, check_images))
        if "val" not in folders:
            names = ", ".join(k + "/" for k, v in SPLIT_FOLDERS.items() if v == "val")
            records = _seeded_split(records, root, report, f"no validation folder ({names}): the val images are "
                                                           f"picked from {folders.get('train', 'train')}/")
    else:
        records = _read_folder(root, "", "train", report, check_images)
        records = _seeded_split(records, root, report, "no train/ validation/ test/ folders: the val images are "
                                                       "picked from the folder's images")
    records.sort(key=lambda r: (SPLITS.index(r.split), r.image_id))
    report.finish(records)
    return records, report


def val_count(n: int) -> int:
    """Images the seeded split puts in "val" out of `n`: n // 10, at least 1 once there are 2 (none of 1).

    Args:
        n: int. Images to split.
    """
    return 0 if n < 2 else max(1, n // 10)


def split_rank(relative_path: str) -> str:
    """The sort key of the seeded split: sha256 of a fixed salt and the image's "/"-separated path relative to the
    dataset root (hex). The images with the smallest keys go to "val".

    Args:
        relative_path: str. E.g. "cats/x.jpg" or "train/x.jpg".
    """
    return hashlib.sha256((SPLIT_SALT + relative_path).encode("utf-8")).hexdigest()


def _seeded_split(records: list[CaptionRecord], root: str, report: ReadReport, note: str) -> list[CaptionRecord]:
    """Moves the `val_count` "train" records with the smallest `split_rank` to "val" (a note in `report`)."""
    pool = [r for r in records if r.split == "train"]
    chosen = sorted(pool, key=lambda r: (split_rank(_relative(r)), r.image_id))[:val_count(len(pool))]
    if not chosen:
        return records
    ids = {r.image_id for r in chosen}
    report.add(SEEDED_SPLIT, root, None, f"{note} by the fixed hash (docs/data.md): {len(chosen)} of {len(pool)} "
                                         f"images to val", "note")
    return [CaptionRecord(r.image_id, r.image_path, r.captions, "val") if r.image_id in ids else r
            for r in records]


def _relative(record: CaptionRecord) -> str:
    """The "/"-separated path of a record's photo relative to the dataset root (`_read_folder` keeps it in the
    image id plus the extension of the file name)."""
    return record.image_id + os.path.splitext(record.image_path)[1]


def _split_folders(root: str) -> dict[str, str]:
    """{split: folder name} of the split folders under `root` ({} when there are none)."""
    found: dict[str, str] = {}
    for name in sorted(os.listdir(root)):
        split = SPLIT_FOLDERS.get(name)
        if split is None or not os.path.isdir(os.path.join(root, name)):
            continue
        if split in found:
            raise ValueError(f"{root}: both {found[split]}/ and {name}/ are {split} folders; keep one")
        found[split] = name
    if found:
        at_root = [name for name in METADATA_FILES if os.path.exists(os.path.join(root, name))]
        if at_root:
            raise ValueError(f"{os.path.join(root, at_root[0])}: a metadata file at the root beside the split folders "
                             f"{', '.join(f + '/' for f in found.values())}: give each split folder its own metadata "
                             f"file (file names relative to it), or use no split folders")
    return dict(sorted(found.items(), key=lambda item: SPLITS.index(item[0])))


def _read_folder(root: str, folder: str, split: str, report: ReadReport,
                 check_images: bool) -> list[CaptionRecord]:
    """The records of one folder's metadata file, all in `split`."""
    directory = os.path.join(root, folder) if folder else root
    present = [name for name in METADATA_FILES if os.path.exists(os.path.join(directory, name))]
    if not present:
        raise FileNotFoundError(f"no {' or '.join(METADATA_FILES)} in {directory}: an imagefolder dataset needs a "
                                f"metadata file naming each photo and its caption(s) (docs/data.md, imagefolder)")
    if len(present) > 1:
        raise ValueError(f"{directory} has both {' and '.join(present)}: keep one metadata file")
    path = os.path.join(directory, present[0])
    lines = _decode(path, report)
    entries = _jsonl_entries(path, lines, report) if path.endswith(".jsonl") else _csv_entries(path, lines, report)

    captions: dict[str, list[str]] = {}   # normalised file name -> captions, in file order
    first_line: dict[str, int] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, file_name, texts in entries:
        key = os.path.normpath(file_name)
        first_line.setdefault(key, number)
        captions.setdefault(key, [])
        for text in texts:
            caption = clean_caption(_without_surrogates(text, path, number, report))
            if not has_words(caption):
                report.add(EMPTY_CAPTION, path, number, f"{file_name}: caption has no words: {caption!r}")
            elif (key, caption) in seen:
                report.add(DUPLICATE_CAPTION, path, number, f"{file_name}: caption {caption!r} already on line "
                                                            f"{seen[key, caption]}")
            else:
                seen[key, caption] = number
                captions[key].append(caption)

    images = ImageFiles(directory) if check_images else None
    records = []
    for key in sorted(captions):
        image_path = os.path.join(directory, key)
        relative = "/".join(([folder] if folder else []) + key.split(os.sep))
        if not captions[key]:
            report.add(NO_CAPTIONS, path, first_line[key], f"{key} has no usable caption")
        elif images is not None and not images.exists(image_path):
            report.add(MISSING_IMAGE, path, first_line[key], f"{key} is not in {directory}")
        else:
            records.append(CaptionRecord(image_id=os.path.splitext(relative)[0], image_path=image_path,
                                         captions=tuple(captions[key]), split=split))
    if check_images:
        for unlisted in _image_files(directory):
            if unlisted not in captions:
                report.add(NO_CAPTIONS, path, None, f"{unlisted} is in {directory} but on no line of "
                                                    f"{os.path.basename(path)}")
    return records


def _without_surrogates(text: str, path: str, number: int, report: ReadReport) -> str:
    """`text` with lone UTF-16 surrogates (a JSON escape of half an emoji, "\\ud83d") replaced by U+FFFD, reported:
    no UTF-8 encoder, TensorFlow's included, accepts them."""
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if fixed != text:
        report.add(BAD_UTF8, path, number, "a lone UTF-16 surrogate escape (half of an emoji?) replaced by U+FFFD",
                   "repaired")
    return fixed


def _image_files(directory: str) -> list[str]:
    """Paths (relative to `directory`, normalised) of the image files under it, hidden folders left out."""
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(os.path.normpath(os.path.relpath(os.path.join(folder, name), directory)) for name in files
                     if name.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def _decode(path: str, report: ReadReport) -> str:
    """The text of a metadata file, strictly UTF-8 (a byte-order mark removed and reported)."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path}:1: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    if data.startswith(b"\xef\xbb\xbf"):
        report.add(BOM, path, 1, "UTF-8 byte-order mark removed", "repaired")
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at column {column}: {e.reason}); "
                         f"save the file as UTF-8 (spreadsheets: 'CSV UTF-8')") from None


def _jsonl_entries(path: str, text: str, report: ReadReport) -> list[tuple[int, str, list[str]]]:
    """(line, file_name, captions) of every usable line of a metadata.jsonl."""
    entries = []
    problems: list[tuple[int, str]] = []
    noted_unknown = False
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            report.add(BLANK_LINE, path, number, "blank line")
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            problem = f"not valid JSON ({e.msg} at column {e.colno}): {line[:60]!r}"
        else:
            problem = _jsonl_problem(entry)
        if problem:
            problems.append((number, problem))
            report.add(MALFORMED_LINE, path, number, problem)
            continue
        unknown = sorted(set(entry) - set(JSONL_KEYS))
        if unknown and not noted_unknown:
            noted_unknown = True
            report.add(UNKNOWN_COLUMN, path, number, f"key(s) {unknown} ignored (here and on later lines); "
                                                     f"the keys read are {', '.join(JSONL_KEYS)}", "note")
        texts = [entry["text"]] if "text" in entry else entry["captions"]
        entries.append((number, entry["file_name"], texts))
    if problems and not entries:
        number, problem = problems[0]
        raise ValueError(f"{path}: not one of its {len(problems)} non-blank lines is a metadata entry "
                         f'({{"file_name": ..., "text": ...}}); line {number}: {problem}')
    return entries


def _jsonl_problem(entry: object) -> str | None:
    """Why a parsed metadata.jsonl line cannot be used, or None."""
    allowed = f"allowed keys: {', '.join(JSONL_KEYS)} (one of text and captions)"
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, not an object with keys {', '.join(JSONL_KEYS)}"
    if "file_name" not in entry:
        return f"has no 'file_name' key (keys: {', '.join(sorted(entry))}); {allowed}"
    problem = _file_name_problem(entry["file_name"])
    if problem:
        return problem
    if "text" in entry and "captions" in entry:
        return f"has both 'text' and 'captions'; {allowed}"
    if "text" not in entry and "captions" not in entry:
        unknown = sorted(set(entry) - set(JSONL_KEYS))
        return (f"has no caption: no 'text' or 'captions' key"
                + (f" (unknown key(s) {unknown})" if unknown else "") + f"; {allowed}")
    if "text" in entry and not isinstance(entry["text"], str):
        return f"'text' must be a string, got {type(entry['text']).__name__}"
    if "captions" in entry:
        captions = entry["captions"]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            return "'captions' must be a list of strings"
        if not captions:
            return "'captions' is an empty list"
    return None


def _file_name_problem(file_name: object) -> str | None:
    """Why a file_name value cannot name a photo of the folder, or None."""
    if not isinstance(file_name, str) or not file_name.strip():
        return f"'file_name' must be a non-empty string, got {file_name!r}"
    if os.path.isabs(file_name) or os.path.normpath(file_name).split(os.sep)[0] == os.pardir:
        return f"'file_name' {file_name!r} must be a path inside the metadata file's folder"
    return None


def _csv_entries(path: str, text: str, report: ReadReport) -> list[tuple[int, str, list[str]]]:
    """(first line, file_name, [caption]) of every usable row of a metadata.csv."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise ValueError(f"{path}:1: empty file; expected the header {','.join(CSV_COLUMNS)}") from None
    except csv.Error as e:
        raise ValueError(f"{path}:1: not a CSV header ({e})") from None
    allowed = f"allowed columns: {', '.join(CSV_COLUMNS)} (several rows may name the same file: several captions)"
    for column in CSV_COLUMNS:
        if column not in header:
            raise ValueError(f"{path}:1: no {column!r} column (the header has: {', '.join(header)}); {allowed}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}:1: column(s) {repeated} appear twice in the header")
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown:
        report.add(UNKNOWN_COLUMN, path, 1, f"column(s) {unknown} ignored; {allowed}", "note")
    where = {name: header.index(name) for name in CSV_COLUMNS}
    entries = []
    problems: list[tuple[int, str]] = []
    last = reader.line_num
    while True:
        number = last + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            report.add(MALFORMED_LINE, path, number, f"not a CSV row ({e})")
            last = reader.line_num
            continue
        last = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            report.add(BLANK_LINE, path, number, "blank line")
            continue
        if len(row) != len(header):
            problem = (f"has {len(row)} fields, the header {len(header)} (a caption holding a comma must be in "
                       f"double quotes): {','.join(row)[:60]!r}")
        else:
            problem = _file_name_problem(row[where["file_name"]].strip())
        if problem:
            problems.append((number, problem))
            report.add(MALFORMED_LINE, path, number, problem)
            continue
        entries.append((number, row[where["file_name"]].strip(), [row[where["text"]]]))
    if problems and not entries:
        number, problem = problems[0]
        raise ValueError(f"{path}: not one of its {len(problems)} rows is usable; line {number}: {problem}")
    return entries
