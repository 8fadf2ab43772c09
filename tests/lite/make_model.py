"""Writes a tiny TFLite export and what TensorFlow says about it, for the no-TensorFlow runtime tests (tests/lite).

    python -m tests.lite.make_model OUT [--variants float32,int8]

Runs with TensorFlow (the main environment): trains the export tests' tiny model (tests/export/conftest.py: eight
synthetic photos, each with its own caption, at 96 px) for a few seconds, exports it with
`sat_tf.export.tflite.export_tflite` and writes

    OUT/config.json, vocab.txt, captioner_<variant>.tflite, decoder_steps_<variant>.tflite    the export
    OUT/photos/photo<i>.<format>                                                              the eight photos
    OUT/expected.json    {setting: {photo name: caption}}: the Python decoder's captions of the photos (on the
                         SavedModel's in-graph decoded pixels) for each decoding setting of EXPECTED

The runtime tests then run in an environment with no TensorFlow at all: `SAT_TF_LITE_MODEL=OUT pytest tests/lite`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Decoding settings the runtime is checked against: name -> (beam size, length penalty, no_repeat_ngram_size).
EXPECTED = {"beam1": (1, 0.0, 0), "beam3": (3, 0.0, 0), "beam3_blocked": (3, 0.5, 1), "beam1_blocked": (1, 0.0, 1)}
EXPECTED_FILE = "expected.json"
PHOTOS = "photos"


def make_model(out: str, variants=("float32", "int8")) -> dict:
    """Writes the export, the photos and expected.json into `out` (see the module docstring); returns expected.

    Args:
        out: str. The folder (created).
        variants: TFLite variants to export.
    """
    import tensorflow as tf

    from sat_tf.export.source import load_source
    from sat_tf.export.tflite import export_tflite
    from sat_tf.images.tf_decode import decode_images
    from tests.export.conftest import FORMATS, IMAGE_SIZE, MAX_LENGTH, build_workdir, sample_captions, sample_images

    images, captions = sample_images(), sample_captions()
    os.makedirs(os.path.join(out, PHOTOS), exist_ok=True)
    names = []
    for i, (data, fmt) in enumerate(zip(images, FORMATS)):
        names.append(f"photo{i}.{fmt.lower()}")
        with open(os.path.join(out, PHOTOS, names[-1]), "wb") as f:
            f.write(data)
    with tempfile.TemporaryDirectory() as workdir:
        source = load_source(build_workdir(workdir, images, captions), "latest")
        export_tflite(source, out, variants=tuple(variants), measure_latency=False, verbose=False)
    annotations = source.encoder(decode_images(tf.constant(images), IMAGE_SIZE))  # (B, L, D)
    expected = {}
    for setting, (beam_size, length_penalty, ngram) in EXPECTED.items():
        tokens = source.captioner.generate(annotations, beam_size=beam_size, max_length=MAX_LENGTH + 1,
                                           length_penalty=length_penalty, no_repeat_ngram_size=ngram)["tokens"]
        expected[setting] = dict(zip(names, source.vocabulary.decode(tokens.numpy())))
    with open(os.path.join(out, EXPECTED_FILE), "w", encoding="utf-8") as f:
        json.dump({"settings": {k: list(v) for k, v in EXPECTED.items()}, "captions": expected}, f, indent=1)
    return expected


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lite.make_model", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the folder to write")
    parser.add_argument("--variants", default="float32,int8", help="TFLite variants, comma-separated")
    args = parser.parse_args(argv)
    make_model(args.out, [v for v in args.variants.split(",") if v])
    print(f"wrote {args.out}: the export, {PHOTOS}/ and {EXPECTED_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
