"""build_encoder / encoder_spec: shapes for every backbone and layer, weights, preprocessing, errors, saving.

Shapes: B batch, S image side, L locations, D feature depth.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from sat_tf.models import ENCODERS, EncoderSpec, ImagePreprocessing, build_encoder, efficientnet_lite0, encoder_spec

ALL_LAYERS = [(name, layer) for name, backbone in ENCODERS.items() for layer in backbone.layers]


def _images(size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3)).astype("uint8")  # (B, S, S, 3)


@pytest.mark.parametrize("name,layer", ALL_LAYERS)
def test_spec_matches_built_encoder_at_odd_size(name, layer):
    # 97 px exercises the rounding of every stride-2 step (ceil for "same" padding, floor for VGG pooling).
    encoder = build_encoder(name, layer, weights=None, image_size=97)
    spec = encoder_spec(name, layer, weights=None, image_size=97)
    assert tuple(encoder.output.shape) == (None, *spec.feature_shape)
    assert spec.weights == "random"


@pytest.mark.parametrize("name,layer,shape", [
    ("efficientnet_lite0", None, (196, 112)),
    ("efficientnet_lite0", "stage7", (49, 320)),
    ("efficientnet_lite0", "top", (49, 1280)),
    ("efficientnet_lite0", "stage3", (784, 40)),
    ("vgg19", None, (196, 512)),
    ("vgg19", "block5_pool", (49, 512)),
    ("resnet50", None, (196, 1024)),
    ("resnet50", "conv5_block3_out", (49, 2048)),
    ("mobilenet_v2", None, (196, 576)),
    ("mobilenet_v2", "out_relu", (49, 1280)),
])
def test_spec_at_224(name, layer, shape):
    spec = encoder_spec(name, layer)
    assert spec.image_size == 224
    assert spec.feature_shape == shape
    assert spec.grid[0] * spec.grid[1] == spec.num_locations


def test_vgg19_random_weights_gives_paper_annotations():
    encoder = build_encoder("vgg19", weights=None)
    annotations = encoder(_images(224))  # (B, L, D)
    assert tuple(annotations.shape) == (2, 196, 512)  # conv5_4: L = 196, D = 512 (paper sec. 3.1.1)
    assert np.isfinite(keras.ops.convert_to_numpy(annotations)).all()


def test_efficientnet_lite0_annotations_are_the_flattened_feature_map():
    images = _images(224, seed=1)
    encoder = build_encoder("efficientnet_lite0", "stage5")  # offline ImageNet weights
    full = efficientnet_lite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))
    feature_map = keras.Model(full.input, full.get_layer("stage5").output)(images)  # (B, 14, 14, 112)
    annotations = encoder(images)  # (B, 196, 112)
    np.testing.assert_allclose(annotations, keras.ops.reshape(feature_map, (2, 196, 112)), rtol=1e-5, atol=1e-5)
    # uint8 and float input in 0..255 are the same images.
    np.testing.assert_allclose(encoder(images.astype("float32")), annotations, rtol=1e-6, atol=1e-6)


def test_encoder_is_frozen_by_default():
    encoder = build_encoder("efficientnet_lite0", "stage3", weights=None, image_size=64)
    assert encoder.trainable_weights == []
    images = _images(64)
    # Frozen: BatchNorm runs in inference mode and stochastic depth is off even when called with training=True.
    np.testing.assert_array_equal(encoder(images, training=True), encoder(images, training=False))
    assert build_encoder("efficientnet_lite0", "stage3", weights=None, image_size=64,
                         trainable=True).trainable_weights


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, while failing on the wrong file
def test_local_weights_file_for_keras_application(tmp_path):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    path = tmp_path / "mobilenet_v2_notop.weights.h5"
    reference.save_weights(path)

    encoder = build_encoder("mobilenet_v2", "out_relu", weights=path, image_size=96)
    images = _images(96)
    expected = reference(keras.applications.mobilenet_v2.preprocess_input(images.astype("float32")))  # (B, 3, 3, D)
    np.testing.assert_allclose(encoder(images), keras.ops.reshape(expected, (2, 9, 1280)), rtol=1e-5, atol=1e-5)
    assert encoder_spec("mobilenet_v2", "out_relu", weights=path, image_size=96).weights == str(path)

    with pytest.raises(ValueError, match="could not load .* into keras.applications.ResNet50"):
        build_encoder("resnet50", weights=path, image_size=96)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_encoder("mobilenet_v2", weights=tmp_path / "absent.weights.h5", image_size=96)


def test_imagenet_download_failure_says_to_pass_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match=r"ImageNet weights of vgg19.*weights=<path to a local weights file"):
        build_encoder("vgg19", weights="imagenet")


@pytest.mark.parametrize("mode,reference", [
    ("caffe", keras.applications.vgg19.preprocess_input),
    ("caffe", keras.applications.resnet50.preprocess_input),
    ("tf", keras.applications.mobilenet_v2.preprocess_input),
    ("lite", lambda x: (x - 127.0) / 128.0),
])
def test_preprocessing_matches_reference(mode, reference):
    images = _images(8).astype("float32")
    np.testing.assert_allclose(ImagePreprocessing(mode)(images), reference(images.copy()), rtol=1e-6, atol=1e-4)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown encoder 'vgg16'.*'efficientnet_lite0'.*'vgg19'"):
        build_encoder("vgg16")
    with pytest.raises(ValueError, match=r"unknown layer 'conv5_4' for encoder 'vgg19'.*'block5_conv4'"):
        build_encoder("vgg19", "conv5_4", weights=None)
    with pytest.raises(ValueError, match=r"unknown layer 'block6'.*'stage5'.*'top'"):
        encoder_spec("efficientnet_lite0", "block6")
    with pytest.raises(ValueError, match="image_size"):
        encoder_spec("vgg19", image_size=16)
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        ImagePreprocessing("torch")


def test_spec_json_round_trip():
    spec = encoder_spec("efficientnet_lite0", "top")
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["grid"] == [7, 7] and data["num_locations"] == 49 and data["feature_dim"] == 1280
    assert data["preprocessing"] == "RGB, (x - 127) / 128"
    assert EncoderSpec.from_dict(data) == spec
    with pytest.raises(ValueError, match="unknown EncoderSpec keys"):
        EncoderSpec.from_dict({**data, "stride": 32})


@pytest.mark.parametrize("name,layer", [("efficientnet_lite0", "stage5"), ("mobilenet_v2", "block_16_project_BN")])
def test_keras_save_load_round_trip(tmp_path, name, layer):
    encoder = build_encoder(name, layer, weights=None, image_size=64)
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    restored = keras.saving.load_model(path)
    images = _images(64)
    np.testing.assert_allclose(restored(images), encoder(images), rtol=1e-6, atol=1e-6)
