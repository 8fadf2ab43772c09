"""Writing captions as they are made, one record per image, to JSON Lines, CSV or TSV (chosen by the suffix).

Each record has `path`, `caption`, `log_prob` and `error` (empty when the image was captioned). Records are
flushed as they are written, so a run stopped half-way leaves every finished image on disk.
"""

from __future__ import annotations

import csv
import json
import math
import os

FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
FIELDS = ("path", "caption", "log_prob", "error")


class CaptionWriter:
    """Appends caption records to `path` (.jsonl, .csv or .tsv); use as a context manager.

    Args:
        path: str. The output file; its parent folder is created; an existing file is replaced.

    Raises:
        ValueError: an unknown suffix (the message lists the known ones).
    """

    def __init__(self, path: str):
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in FORMATS:
            raise ValueError(f"--out {path}: unknown format {suffix or '(no suffix)'!r}; use one of "
                             f"{', '.join(FORMATS)}")
        self.path, self.format = path, FORMATS[suffix]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "w", encoding="utf-8", newline="")
        self._csv = None
        if self.format != "jsonl":
            self._csv = csv.writer(self._file, delimiter="\t" if self.format == "tsv" else ",",
                                   lineterminator="\n")
            self._csv.writerow(FIELDS)
        self.written = 0

    def write(self, path: str, caption: str = "", log_prob: float = math.nan, error: str | None = None) -> None:
        log_prob = None if math.isnan(log_prob) else round(float(log_prob), 4)
        if self._csv is None:
            record = {"path": path, "caption": caption, "log_prob": log_prob, "error": error or ""}
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            self._csv.writerow([path, caption, "" if log_prob is None else log_prob, error or ""])
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CaptionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
