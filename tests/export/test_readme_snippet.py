"""The README's "caption a file with a trained work dir" snippet runs as printed and says the trained caption."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python blocks of a Markdown text."""
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_caption_snippet_captions_a_photo(workdir, images, captions, tmp_path, monkeypatch, capsys):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        snippets = [block for block in python_blocks(f.read()) if "ImageCaptioner" in block]
    assert len(snippets) == 1, "README.md should hold one Python block that captions a file"
    snippet = snippets[0]
    assert len(snippet.strip().splitlines()) <= 5
    # The snippet's paths, as a user has them: the work dir at runs/f8k_soft and photo.jpg in the current directory.
    os.makedirs(tmp_path / "runs")
    os.symlink(workdir, tmp_path / "runs" / "f8k_soft")
    (tmp_path / "photo.jpg").write_bytes(images[1])  # a JPEG the fixture's model was trained to caption
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == captions[1]
