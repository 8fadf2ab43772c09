"""Every `python -m sat_tf...` (and `benchmarks...`, `tools...`) command written in README.md and docs/*.md parses
with that module's own argument parser: a renamed or removed flag fails here instead of a reader. Parse only: the
parser's `parse_args` is wrapped to stop the program right after parsing, so nothing runs."""

from __future__ import annotations

import argparse
import importlib
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
COMMAND = re.compile(r"(?:^|\s|`)(?:\S*/)?python3?\s+-m\s+((?:sat_tf|benchmarks|tools)(?:\.\w+)*)(.*)$")
FENCE = re.compile(r"^```")


class _Parsed(Exception):
    """Raised by the wrapped parse_args once the command line parsed."""


def _commands_of(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """(line number, module, argument text) of every command in fenced code blocks and inline code spans."""
    found = []
    lines = path.read_text(encoding="utf-8").splitlines()
    in_fence = False
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            i += 1
            continue
        if in_fence:
            while line.rstrip().endswith("\\") and i + 1 < len(lines):  # continued shell lines
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            # optional flags written [--flag VALUE] are checked too: the brackets go
            match = COMMAND.search(line.split(" # ")[0].split("  #")[0].replace("[", "").replace("]", ""))
            if match:
                found.append((number, match.group(1), match.group(2)))
        else:
            for span in re.findall(r"`([^`]+)`", line):
                match = COMMAND.search(span)
                # a module named in passing (no arguments) or a synopsis ([optional], {choices}, A|B, ...) is no command
                if match and match.group(2).strip() and not re.search(r"[\[{|]|\.\.\.", match.group(2)):
                    found.append((number, match.group(1), match.group(2)))
        i += 1
    return found


def _arguments(text: str) -> list[str]:
    """The command's arguments: shell quoting resolved, `$(...)` substitutions and anything after a pipe,
    redirection or `&&` dropped."""
    text = re.sub(r"\$\([^)]*\)", "X", text)
    args = []
    for token in shlex.split(text, comments=True):
        if token in ("|", "&&", ";", ">", "2>&1", "&") or token.startswith((">", "|")):
            break
        args.append(token)
    return args


def _all_commands():
    for path in DOCS:
        for number, module, text in _commands_of(path):
            yield pytest.param(module, text, id=f"{path.relative_to(ROOT)}:{number}:{module}")


def _entry_point(module: str):
    """The `main(argv)` of `python -m module`."""
    try:
        mod = importlib.import_module(module + ".__main__")
    except ModuleNotFoundError as e:
        if e.name != module + ".__main__":
            raise
        mod = importlib.import_module(module)
    return mod.main


@pytest.mark.parametrize("module,text", list(_all_commands()))
def test_documented_command_parses(module, text, monkeypatch):
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    try:
        main = _entry_point(module)
    except ModuleNotFoundError:
        pytest.fail(f"python -m {module}: no such module")
    with pytest.raises(_Parsed):
        try:
            main(_arguments(text))
        except SystemExit as e:
            pytest.fail(f"python -m {module}{text}: the parser refused it (exit {e.code})")


def test_the_docs_hold_commands_of_every_entry_point():
    modules = {module for path in DOCS for _, module, _ in _commands_of(path)}
    assert {"sat_tf.train", "sat_tf.caption", "sat_tf.evaluate", "sat_tf.export", "sat_tf.pipelines.check"} <= modules
