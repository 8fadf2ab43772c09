"""The TensorFlow-free LiteRT runtime captions real photos as the SavedModel does: the shipped `flickr8k_soft` preset
exported to both, 50 Flickr8k dev photos, float32 beam search (`benchmarks/lite_agreement.py`)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_litert_float32_captions_equal_the_saved_models_on_50_dev_photos(flickr8k_dir, tmp_path):
    from benchmarks.lite_agreement import agreement
    from sat_tf.export.__main__ import main as export

    exports = str(tmp_path / "exports")
    assert export(["--preset", "flickr8k_soft", "--formats", "saved_model,tflite", "--tflite-variants", "float32",
                   "--out", exports]) == 0
    decoding, rows = agreement(exports, str(flickr8k_dir), images=50, variants=["float32"])
    assert "beam 10" in decoding and "no_repeat_ngram_size 2" in decoding
    saved_model, lite = rows
    assert lite["equal"] == 50, [(a, b) for a, b in zip(saved_model["captions"], lite["captions"]) if a != b]
    assert lite["scores"].scores == saved_model["scores"].scores
