"""The native Keras format: `captioner.keras` and `encoder.keras`, for Python users who want the Keras objects back.

    <out>/captioner.keras   the Captioner (decoder); `keras.models.load_model` gives an identical model
    <out>/encoder.keras     the encoder, RGB 0..255 (B, S, S, 3) -> annotations (B, L, D)
    <out>/vocab.txt, <out>/config.json

Loading needs the sat_tf layer classes registered, i.e. `import sat_tf.models.captioner` first (`load_keras` does).

Shapes: B batch, S image side, L locations, D depth.
"""

from __future__ import annotations

import os

import keras

from sat_tf.export.source import VOCAB, ExportSource, export_config, write_config, write_vocabulary

CAPTIONER_FILE = "captioner.keras"
ENCODER_FILE = "encoder.keras"


def export_keras(source: ExportSource, out_dir: str) -> dict[str, str]:
    """Writes the two .keras files, the vocabulary and config.json into `out_dir`.

    Args:
        source: ExportSource.
        out_dir: str. Destination folder (created).

    Returns:
        {"captioner": path, "encoder": path, "vocabulary": path, "config": path}.
    """
    source.refuse_composite("the Keras format")
    os.makedirs(out_dir, exist_ok=True)
    paths = {"captioner": os.path.join(out_dir, CAPTIONER_FILE), "encoder": os.path.join(out_dir, ENCODER_FILE)}
    source.captioner.save(paths["captioner"])
    source.encoder.save(paths["encoder"])
    paths["vocabulary"] = write_vocabulary(out_dir, source.vocabulary)
    paths["config"] = write_config(out_dir, export_config(
        source, "keras", files={"captioner": CAPTIONER_FILE, "encoder": ENCODER_FILE, "vocabulary": VOCAB}))
    return paths


def load_keras(out_dir: str):
    """Loads what `export_keras` wrote: (encoder, captioner, vocabulary)."""
    import sat_tf.models.captioner  # noqa: F401  (registers the sat_tf layer classes with Keras)
    from sat_tf.text.vocabulary import Vocabulary

    captioner = keras.models.load_model(os.path.join(out_dir, CAPTIONER_FILE))
    encoder = keras.models.load_model(os.path.join(out_dir, ENCODER_FILE))
    return encoder, captioner, Vocabulary.load(os.path.join(out_dir, VOCAB))
