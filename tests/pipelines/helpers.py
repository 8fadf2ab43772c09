"""Small fixtures for pipeline tests: images written with Pillow, records, and a fast fake encoder."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from sat_tf.pipelines.sources.record import CaptionRecord
from sat_tf.text.vocabulary import Vocabulary

IMAGE_SIZE = 32
GRID = 2
ENCODER_INFO = {"name": "fake_pool", "layer": "pool2x2", "image_size": IMAGE_SIZE, "grid": [GRID, GRID],
                "feature_dim": 3, "num_locations": GRID * GRID, "weights": "none"}
CAPTIONS = ["a red dog runs", "a dog in the grass", "two dogs play in the water",
            "a man rides a bike down the street", "a girl"]


def fake_encoder(images: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 -> (B, 4, 3): mean colour of each image quadrant, scaled to 0..1."""
    b, s = images.shape[0], images.shape[1]
    x = images.astype(np.float32).reshape(b, GRID, s // GRID, GRID, s // GRID, 3) / 255.0
    return x.mean(axis=(2, 4)).reshape(b, GRID * GRID, 3)


def write_images(directory: str, count: int, seed: int = 0) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(40 + i % 7, 48, 3), dtype=np.uint8)
        path = os.path.join(directory, f"img{i:03d}.jpg" if i % 2 else f"img{i:03d}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_records(paths: list[str], split_of=lambda i: "train" if i % 4 else "val") -> list[CaptionRecord]:
    return [CaptionRecord(image_id=os.path.splitext(os.path.basename(p))[0], image_path=p,
                          captions=tuple(CAPTIONS[(i + k) % len(CAPTIONS)] for k in range(1 + i % 5)),
                          split=split_of(i)) for i, p in enumerate(paths)]


def vocabulary() -> Vocabulary:
    return Vocabulary.build(CAPTIONS, min_count=1)
