"""The README's Python snippet ("Caption a photo": `ImageCaptioner.from_preset`) runs as printed, with the shipped
preset, on two photos, and prints a caption with one attention row per word over the 7x7 grid."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python blocks of a Markdown text."""
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_caption_snippet_captions_a_photo(images, tmp_path, monkeypatch, capsys):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        snippets = [block for block in python_blocks(f.read()) if "ImageCaptioner" in block]
    assert len(snippets) == 1, "README.md should hold one Python block that captions a file"
    snippet = snippets[0]
    assert "from_preset" in snippet and len(snippet.strip().splitlines()) <= 6
    # The snippet's file names, as a user has them in the current directory.
    (tmp_path / "a.jpg").write_bytes(images[1])  # a JPEG
    (tmp_path / "b.png").write_bytes(images[0])  # a PNG
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    match = re.fullmatch(r"([a-z ]+) \((\d+), 49\)", printed)
    assert match, printed
    assert int(match.group(2)) == len(match.group(1).split()) >= 2
