"""Writing small files so that no reader ever sees half of one: configs, manifests, histories, metrics."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

# The process's umask, read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, write, *, binary: bool = False, fsync: bool = True) -> str:
    """Calls `write(f)` on a unique temporary file beside `path` (named `.<name>.*.tmp`), fsyncs, then os.replace.

    A process killed mid-write leaves the previous file intact and at most a `*.tmp` file (never a truncated file
    under the real name). Creates the parent folder. The file gets the permissions `open()` would give it (0o666
    less the umask), not the temporary file's private 0o600, so a report or config can be read by a web server or
    another worker's user. Returns the path.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int = 2, sort_keys: bool = False,
                      ensure_ascii: bool = True) -> str:
    """json.dump through `write_atomic` (with a final newline). Returns the path."""

    def dump(f):
        json.dump(payload, f, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
        f.write("\n")

    return write_atomic(path, dump)
