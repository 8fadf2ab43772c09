"""Writing small files so that no reader ever sees half of one: configs, manifests, histories, metrics."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int = 2, sort_keys: bool = False,
                      ensure_ascii: bool = True) -> str:
    """json.dump to a unique temporary file beside `path` (named `.<name>.*.tmp`), fsync, then os.replace.

    A process killed mid-write leaves the previous file intact and at most a `*.tmp` file (never a truncated JSON
    under the real name). Creates the parent folder. Returns the path.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
