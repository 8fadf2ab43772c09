"""Shared fixtures. Tests that need the real Flickr8k copy in ../shared skip with a message where it is absent."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_FLICKR8K = ROOT.parent / "shared" / "flickr8k"


@pytest.fixture
def flickr8k_dir() -> pathlib.Path:
    """Path of ../shared/flickr8k, or a skip where it is absent."""
    if not (SHARED_FLICKR8K / "Flickr8k_text" / "Flickr8k.token.txt").is_file():
        pytest.skip(f"needs the Flickr8k copy at {SHARED_FLICKR8K} (absent on this machine)")
    return SHARED_FLICKR8K
