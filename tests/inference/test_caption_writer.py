"""Caption records as they are made (`sat_tf.inference.caption_writer`); the records of a whole run are checked in
tests/test_caption.py."""

from __future__ import annotations

import pytest

from sat_tf.inference.caption_writer import CaptionWriter


def test_writer_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"captions\.txt: unknown format '\.txt'; use one of \.jsonl, \.csv, \.tsv"):
        CaptionWriter(str(tmp_path / "captions.txt"))
