"""The repository describes what sat_tf is: a README a newcomer can read, and no file that names the history of its
development or a path that exists only on the machine it was developed on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 300
# Built from pieces so that this file does not match its own patterns.
HISTORY = re.compile("|".join(["sess" + r"ions? [0-9]", "iss" + r"ue[- ][0-9]", "time " + "budget"]), re.I)
# An absolute path of one particular machine: a work or temporary folder at the file system's root, or a home
# directory. URLs and relative paths pass: there the folder name follows a word character, a dot or a slash.
MACHINE_PATH = re.compile(r"(?<![\w.:/~-])/(?:" + "|".join(["wo" + "rk", "t" + "mp", "ro" + "ot", r"home/[a-z][\w.-]*",
                                                                r"Users/[A-Za-z][\w.-]*"]) + r")/")
SHARED = ".." + "/shared"


def tracked_files() -> list[str]:
    """Tracked files (repository-relative), or a skip where git or the repository is not there."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError:
        pytest.skip(f"{ROOT} is not a git checkout")
    return [name for name in out.decode("utf-8").split("\0") if name]


def text_of(name: str) -> str:
    with open(os.path.join(ROOT, name), "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def offending_lines(pattern: re.Pattern, names: list[str]) -> list[str]:
    """`file:line: text` for every line of the given files that matches `pattern`."""
    found = []
    for name in names:
        if not os.path.isfile(os.path.join(ROOT, name)):
            continue  # deleted in the working tree, not yet committed
        for number, line in enumerate(text_of(name).splitlines(), 1):
            if pattern.search(line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    return found


def test_the_readme_stays_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = len(f.read().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move details to docs/"


def test_no_file_tells_the_history_of_its_development():
    names = [name for name in tracked_files() if not name.startswith("tests/fixtures/")]
    assert not offending_lines(HISTORY, names)


def test_no_file_names_a_path_of_the_development_machine():
    names = [name for name in tracked_files() if not name.startswith("tests/fixtures/")]
    assert not offending_lines(MACHINE_PATH, names)


def test_user_documentation_uses_paths_a_user_has():
    names = [name for name in tracked_files() if name == "README.md" or name.startswith("docs/")]
    assert "README.md" in names
    assert not offending_lines(re.compile(re.escape(SHARED)), names)


@pytest.mark.parametrize("line, bad", [
    ("# se" + "ssion 5", True), ("What se" + "ssions 3-8 measured", True), ("Is" + "sue 4 is blocked", True),
    ("the is" + "sue-8 check", True), ("within the ti" + "me budget", True), ("a session fixture", False),
    ("keras#20585", False), ("--workdir /" + "work/runs/x", "path"), ("a /" + "tmp/attn.py script", "path"),
    ("/" + "home/alice/data", "path"), ("https://example.org/" + "tmp/x", False), ("runs/" + "tmp/x", False),
])
def test_the_patterns_catch_what_they_should_and_nothing_else(line, bad):
    assert bool(HISTORY.search(line)) == (bad is True)
    assert bool(MACHINE_PATH.search(line)) == (bad == "path")
