"""The images a command is given: files, folders and glob patterns, expanded to image files in a stable order.

A folder contributes every file under it (recursively, hidden entries skipped) whose suffix is an image format's
(IMAGE_SUFFIXES, any case); a pattern with `*`, `?` or `[` is expanded with `glob` (`**` matches folders
recursively) and a folder it matches is expanded as above; anything else is taken as a file name as given, so a
missing or unreadable file reaches the captioner and becomes that file's error line. A pattern or folder that
yields no image is reported in `missing` with the reason.
"""

from __future__ import annotations

import glob
import os
from typing import Iterator, Sequence

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
_GLOB_CHARS = frozenset("*?[")
NO_MATCH = "no image file matches"
NO_IMAGE_IN_FOLDER = "cannot read file (a folder with no image file in it)"


def _folder_images(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                yield os.path.join(root, name)


def expand_image_paths(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(image paths in order, [(input, why it gave no image)]).

    Files keep their order on the command line; a folder's and a pattern's matches come sorted. A file named
    twice (directly or through folders and patterns) is listed once, at its first place.
    """
    paths, missing, seen = [], [], set()

    def add(path: str) -> None:
        key = os.path.normpath(path)
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for item in inputs:
        before = len(paths)
        if os.path.isdir(item):
            for path in _folder_images(item):
                add(path)
        elif not os.path.exists(item) and _GLOB_CHARS & set(item):
            for match in sorted(glob.glob(item, recursive=True)):
                if os.path.isdir(match):
                    for path in _folder_images(match):
                        add(path)
                elif os.path.splitext(match)[1].lower() in IMAGE_SUFFIXES:
                    add(match)
        else:
            add(item)
        if len(paths) == before and os.path.isdir(item):
            missing.append((item, NO_IMAGE_IN_FOLDER))
        elif len(paths) == before and not os.path.exists(item):
            missing.append((item, NO_MATCH))
    return paths, missing
