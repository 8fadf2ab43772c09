"""The decoding benchmark (benchmarks/decoding.py) times every setting with and without n-gram blocking."""

from __future__ import annotations

from benchmarks import decoding


def test_rows_with_and_without_blocking(capsys):
    assert decoding.main(["--images", "2", "--beam", "2", "--batch", "2", "--max-length", "3", "--rounds", "1",
                          "--no-repeat-ngram-size", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[2]) for r in rows] == [("1", "off"), ("1", "2"), ("2", "off"), ("2", "2")]
    assert all(float(r[-1]) > 0 for r in rows) and [r[-1] for r in rows][::2] == ["1.000", "1.000"]
