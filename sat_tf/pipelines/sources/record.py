"""What every dataset reader returns: `CaptionRecord`s and a `ReadReport` of what was skipped or repaired.

Readers never crash on a bad line or entry: they skip it (or repair it, when the intent is unambiguous) and add a
`Problem` naming the file, the line (text files) or the JSON path (JSON files), and the reason. Only input that
cannot be read at all (a missing file, JSON that does not parse or lacks its top-level keys) raises.

Split names are the same across readers: "train", "val" (Flickr8k's "dev"), "test", and for the Karpathy splits
"restval" unless mapped to "train".
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from typing import Iterator

SPLITS = ("train", "val", "test", "restval")

# Problem kinds. Action "skipped": the item was dropped; "repaired": kept after a fix; "note": nothing dropped.
BLANK_LINE = "blank_line"                # skipped: an empty line
BOM = "bom"                              # repaired: UTF-8 byte-order mark at the start of a file, removed
BAD_UTF8 = "bad_utf8"                    # repaired: invalid UTF-8 bytes decoded as U+FFFD
MALFORMED_LINE = "malformed_line"        # skipped: a line without the expected fields (no tab, no #N)
MALFORMED_ENTRY = "malformed_entry"      # skipped: a JSON entry missing a key or with a wrong type
TAB_IN_CAPTION = "tab_in_caption"        # repaired: tabs inside a caption turned into spaces
DUPLICATE_CAPTION_ID = "duplicate_caption_id"  # skipped: a caption id seen before (the first one is kept)
DUPLICATE_IMAGE = "duplicate_image"      # skipped: an image listed twice (the first entry is kept)
EMPTY_CAPTION = "empty_caption"          # skipped: a caption with no letter or digit
MISSING_IMAGE = "missing_image"          # skipped: the image file does not exist
UNKNOWN_IMAGE = "unknown_image"          # skipped: a caption/split entry for an image the captions don't know
NO_CAPTIONS = "no_captions"              # skipped: an image without a single usable caption
NO_SPLIT = "no_split"                    # skipped: an image in no split file
SPLIT_CONFLICT = "split_conflict"        # skipped: an image listed in a second split (the first one is kept)
UNKNOWN_SPLIT = "unknown_split"          # skipped: a split name outside SPLITS
MISSING_SPLIT_FILE = "missing_split_file"  # note: an optional split file is absent
DUPLICATE_CAPTION = "duplicate_caption"  # skipped: the same image with the same caption again (the first kept)
UNKNOWN_COLUMN = "unknown_column"        # note: a metadata column the reader does not use (ignored)
SEEDED_SPLIT = "seeded_split"            # note: no validation split given; val images picked by a fixed hash

ACTIONS = ("skipped", "repaired", "note")


@dataclasses.dataclass(frozen=True)
class CaptionRecord:
    """One image with its captions, as read from a dataset.

    Args:
        image_id: str. The dataset's id (Flickr: file name without extension; COCO: the numeric id as text).
        image_path: str. Path of the image file.
        captions: tuple of str. The raw captions (whitespace collapsed, otherwise as written; normalisation is
            `sat_tf.text.normalize_caption`'s job).
        split: str. One of SPLITS.
    """

    image_id: str
    image_path: str
    captions: tuple[str, ...]
    split: str

    def __post_init__(self):
        object.__setattr__(self, "captions", tuple(self.captions))
        if not self.captions:
            raise ValueError(f"CaptionRecord {self.image_id!r} has no captions")
        if self.split not in SPLITS:
            raise ValueError(f"CaptionRecord {self.image_id!r}: split must be one of {SPLITS}, got {self.split!r}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One skipped or repaired item.

    Args:
        kind: str. One of the kind constants of this module (BLANK_LINE, MISSING_IMAGE, ...).
        file: str. The file the item came from.
        line: int or None. 1-based line number for text files; None for JSON (the message names the JSON path).
        message: str. What was wrong, in words.
        action: str. "skipped", "repaired" or "note".
    """

    kind: str
    file: str
    line: int | None
    message: str
    action: str = "skipped"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.kind}: {self.message} ({self.action})"


@dataclasses.dataclass
class ReadReport:
    """Everything a reader skipped or repaired, with totals.

    Args:
        source: str. What was read (reader name and main file).
        problems: list of Problem, in the order found.
        num_records: int. Records returned.
        num_captions: int. Captions in the returned records.
    """

    source: str
    problems: list[Problem] = dataclasses.field(default_factory=list)
    num_records: int = 0
    num_captions: int = 0

    def add(self, kind: str, file: str | os.PathLike, line: int | None, message: str,
            action: str = "skipped") -> None:
        """Records one problem.

        Args:
            kind: str. A kind constant of this module.
            file: the file it came from.
            line: 1-based line number, or None for JSON input.
            message: what was wrong.
            action: "skipped", "repaired" or "note".
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        self.problems.append(Problem(kind, os.fspath(file), line, message, action))

    def counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        return dict(collections.Counter(p.kind for p in self.problems))

    def count(self, kind: str) -> int:
        """Number of problems of one kind."""
        return sum(p.kind == kind for p in self.problems)

    def of_kind(self, kind: str) -> list[Problem]:
        """The problems of one kind."""
        return [p for p in self.problems if p.kind == kind]

    @property
    def num_skipped(self) -> int:
        """Items dropped."""
        return sum(p.action == "skipped" for p in self.problems)

    def finish(self, records: list[CaptionRecord]) -> None:
        """Sets the totals from the records a reader returns."""
        self.num_records = len(records)
        self.num_captions = sum(len(r.captions) for r in records)

    def summary(self, examples: int = 3) -> str:
        """A few lines for a log: totals, then per kind its count and the first `examples` problems."""
        lines = [f"{self.source}: {self.num_records} images, {self.num_captions} captions; "
                 f"{len(self.problems)} problem(s), {self.num_skipped} item(s) skipped"]
        for kind, n in sorted(self.counts().items()):
            lines.append(f"  {kind}: {n}")
            lines.extend(f"    {p}" for p in self.of_kind(kind)[:examples])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _read_bytes(path: str, report: ReadReport, missing: str) -> bytes:
    """A file's bytes without a leading UTF-8 byte-order mark (reported as repaired); `missing` is the
    FileNotFoundError message."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(missing) from None
    if data.startswith(b"\xef\xbb\xbf"):
        report.add(BOM, path, 1, "UTF-8 byte-order mark removed", "repaired")
        data = data[3:]
    return data


def keep_image(records: list[CaptionRecord], report: ReadReport, path: str, where: str, image_id: str,
               image_path: str, captions: list[str], split: str, images: "ImageFiles | None") -> None:
    """Appends the image's record, or reports why it is skipped (no usable caption, missing file).

    Args:
        records: the reader's output list.
        report: where problems go.
        path: the annotation file; `where`: the entry's JSON path in it, for messages.
        image_id, image_path, captions, split: the record's fields.
        images: an ImageFiles to check the file exists, or None to skip the check.
    """
    if not captions:
        report.add(NO_CAPTIONS, path, None, f"{where}: image {image_id!r} has no usable caption")
    elif images is not None and not images.exists(image_path):
        report.add(MISSING_IMAGE, path, None, f"{where}: {image_path} does not exist")
    else:
        records.append(CaptionRecord(image_id=image_id, image_path=image_path, captions=tuple(captions), split=split))


def read_lines(path: str | os.PathLike, report: ReadReport) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, text) of a UTF-8 text file, never failing on its content.

    A leading byte-order mark is removed (BOM), "\\r\\n" endings are accepted (and "\\r" alone in a file without
    any "\\n", as classic Mac OS wrote them), a line with invalid UTF-8 is decoded with U+FFFD replacements
    (BAD_UTF8); both are added to `report` as repaired. The empty string after a final newline is not yielded;
    other blank lines are (the caller decides and reports).

    Args:
        path: the file.
        report: where problems go.

    Raises:
        FileNotFoundError: naming the file, where it does not exist.
    """
    path = os.fspath(path)
    data = _read_bytes(path, report, f"{path} does not exist")
    # A file whose lines end in "\r" only would otherwise be one line: every caption glued into the first one.
    lines = data.split(b"\n" if b"\n" in data or b"\r" not in data else b"\r")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            text = raw.decode("utf-8", errors="replace")
            report.add(BAD_UTF8, path, number, f"invalid UTF-8 ({e.reason} at byte {e.start}) replaced by U+FFFD",
                       "repaired")
        yield number, text


# Letters that `sat_tf.text` normalisation removes: the modifier-letter apostrophe (it becomes a quote mark) and the
# Hangul fillers (default-ignorable, dropped by NFKC_Casefold; U+3164 is a popular "invisible" character).
_NOT_WORD_LETTERS = frozenset("\u02bc\u115f\u1160\u3164\uffa0")


def has_words(caption: str) -> bool:
    """True where a caption holds at least one letter or digit (otherwise normalisation leaves it empty)."""
    return any(ch.isalnum() and ch not in _NOT_WORD_LETTERS for ch in caption)


def clean_caption(caption: str) -> str:
    """Collapses every run of whitespace (tabs, newlines included) into one space and strips the ends."""
    return " ".join(caption.split())


class ImageFiles:
    """Answers "does this image file exist?" with one directory listing per folder, not one stat per image.

    Args:
        images_dir: the image root folder; it must exist.

    Raises:
        FileNotFoundError: naming the folder, where it does not exist.
    """

    def __init__(self, images_dir: str | os.PathLike):
        self.images_dir = os.fspath(images_dir)
        if not os.path.isdir(self.images_dir):
            raise FileNotFoundError(f"image folder {self.images_dir} does not exist")
        self._listings: dict[str, set[str]] = {}

    def exists(self, path: str | os.PathLike) -> bool:
        """True where `path` (normally under images_dir) names an existing entry of its folder."""
        folder, name = os.path.split(os.fspath(path))
        if folder not in self._listings:
            self._listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        return name in self._listings[folder]


def read_json(path: str | os.PathLike, report: ReadReport, what: str) -> object:
    """Parses a JSON file, repairing a byte-order mark and invalid UTF-8 (both reported) rather than failing.

    Args:
        path: the file.
        report: where problems go.
        what: str. What the file should be, for error messages ("a COCO captions file").

    Raises:
        FileNotFoundError: naming the file, where it does not exist.
        ValueError: naming the file, line and column, where it is not JSON.
    """
    path = os.fspath(path)
    data = _read_bytes(path, report, f"{path} does not exist (expected {what})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        text = data.decode("utf-8", errors="replace")
        bad = 0
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as line_error:
                bad += 1
                report.add(BAD_UTF8, path, number, f"invalid UTF-8 ({line_error.reason} at byte "
                           f"{line_error.start} of the line) replaced by U+FFFD", "repaired")
        if not bad:  # a multi-byte sequence cut by a newline: report the file position
            report.add(BAD_UTF8, path, data[:e.start].count(b"\n") + 1, f"invalid UTF-8 ({e.reason}) replaced by "
                       "U+FFFD", "repaired")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); expected {what}") from None
    if _SURROGATE_ESCAPE.search(text):
        parsed = _repair_surrogates(parsed, "", path, report)
    return parsed


# JSON may escape half of a UTF-16 surrogate pair ("\ud83d": an emoji cut in two), which json.loads turns into a str
# that no UTF-8 encoder (TensorFlow's included) accepts: the caption would crash the vocabulary build.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _repair_surrogates(value, where: str, path: str, report: ReadReport):
    """`value` with lone surrogates in its strings replaced by U+FFFD, each reported (BAD_UTF8) by its JSON path."""
    if isinstance(value, str):
        fixed = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        if fixed != value:
            report.add(BAD_UTF8, path, None, f"{where or 'the top level'}: a lone UTF-16 surrogate escape (half of "
                       "an emoji?) replaced by U+FFFD", "repaired")
        return fixed
    if isinstance(value, list):
        return [_repair_surrogates(item, f"{where}[{i}]", path, report) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {_repair_surrogates(key, where, path, report):
                _repair_surrogates(item, f"{where}.{key}" if where else str(key), path, report)
                for key, item in value.items()}
    return value


def require_keys(data: object, path: str | os.PathLike, what: str, **types: type) -> None:
    """Checks the top level of a parsed JSON file: a dict holding each key of `types` with that type.

    Args:
        data: the parsed JSON.
        path: the file, for the message.
        what: str. What the file should be ("a COCO captions file").
        **types: key -> expected Python type (list, dict, ...).

    Raises:
        ValueError: naming the file and the missing or mistyped key.
    """
    path = os.fspath(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {what}: a JSON object at the top level with keys {sorted(types)}, "
                         f"got a JSON {type(data).__name__}")
    for key, expected in types.items():
        if key not in data:
            raise ValueError(f"{path}: expected {what}: missing top-level key {key!r} (found keys: "
                             f"{sorted(data)[:10]})")
        if not isinstance(data[key], expected):
            raise ValueError(f"{path}: expected {what}: top-level key {key!r} must be a JSON "
                             f"{'array' if expected is list else expected.__name__}, got {type(data[key]).__name__}")


def missing_key(entry: object, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` that a JSON entry lacks (or a note that it is not an object); None where all are there."""
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, not an object"
    for key in keys:
        if key not in entry:
            return f"has no key {key!r}"
    return None


def raise_if_all_malformed(report: ReadReport, path: str | os.PathLike, key: str, total: int, good: int,
                           what: str) -> None:
    """Raises when a non-empty JSON list had not one well-formed entry: the file is not the expected schema.

    Args:
        report: holds the MALFORMED_ENTRY problems of that list.
        path: the file.
        key: the top-level key of the list ("images").
        total: entries in the list.
        good: well-formed entries found.
        what: what the file should be.
    """
    if total and not good:
        first = next((p.message for p in report.of_kind(MALFORMED_ENTRY) if p.message.startswith(key)), "")
        raise ValueError(f"{os.fspath(path)}: expected {what}: none of the {total} entries of {key!r} has the "
                         f"expected keys; first: {first}")
