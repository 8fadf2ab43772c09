"""Fixtures of the LiteRT runtime tests. These tests import no TensorFlow, so they run on a device-like environment
with numpy, Pillow, ai-edge-litert and pytest only (CI: `.venv-lite`). The model comes from outside: the folder
written by `python -m tests.lite.make_model OUT` (with TensorFlow), named by the SAT_TF_LITE_MODEL environment
variable; without it the tests that need a model skip with a message."""

from __future__ import annotations

import json
import os

import pytest

MODEL_VARIABLE = "SAT_TF_LITE_MODEL"


@pytest.fixture(scope="package")
def lite_model() -> str:
    """The export folder of `tests.lite.make_model` (config.json, vocab.txt, *.tflite, photos/, expected.json)."""
    path = os.environ.get(MODEL_VARIABLE, "")
    if not path:
        pytest.skip(f"needs a TFLite export: {MODEL_VARIABLE}=DIR after `python -m tests.lite.make_model DIR` "
                    f"(run with TensorFlow)")
    if not os.path.isfile(os.path.join(path, "expected.json")):
        pytest.fail(f"{MODEL_VARIABLE}={path} is not a folder written by `python -m tests.lite.make_model`")
    return path


@pytest.fixture(scope="package")
def expected(lite_model) -> dict:
    """{"settings": {name: [beam size, length penalty, n-gram size]}, "captions": {name: {photo: caption}}}."""
    with open(os.path.join(lite_model, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="package")
def photos(lite_model) -> list[str]:
    """The eight photo files, in order."""
    folder = os.path.join(lite_model, "photos")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder), key=lambda n: int(n[5:].split(".")[0]))]
