"""A stand-in for `sat_tf.models.encoder.build_encoder`, so fault tests run the real `prepare_features` /
`train` / caption code paths without the cost of a CNN: images (B, S, S, 3) -> (B, L, D) with the real encoder's
grid and depth (so manifests and configs are exactly those of a real run), from area-pooled colours through a fixed
random projection and ReLU6 (bounded like EfficientNet-Lite's features).

Shapes: B batch, S image side, L = h * w locations, D depth.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from sat_tf.models import encoder as encoder_module


def build_fake_encoder(name: str = "efficientnet_lite0", layer: str | None = None, weights="imagenet",
                       image_size: int | None = None, trainable: bool = False):
    del weights, trainable
    spec = encoder_module.encoder_spec(name, layer, "random", image_size)
    (h, w), depth = spec.grid, spec.feature_dim
    projection = tf.constant(np.random.default_rng(0).normal(size=(3, depth)).astype(np.float32))  # (3, D)

    def encoder(images, training=False):
        del training
        x = tf.cast(images, tf.float32) / 255.0  # (B, S, S, 3)
        pooled = tf.image.resize(x, (h, w), method="area")  # (B, h, w, 3)
        features = tf.nn.relu6(3.0 * tf.einsum("bhwc,cd->bhwd", pooled, projection))  # (B, h, w, D)
        return tf.reshape(features, (-1, h * w, depth))  # (B, L, D)

    return encoder


def install(monkeypatch) -> None:
    """Makes every later `build_encoder` call (prepare_features, ImageCaptioner) build the fake."""
    monkeypatch.setattr(encoder_module, "build_encoder", build_fake_encoder)
