"""The manifest of a features directory: its file names, writing and reading it, and checking the shards against it.

A features directory holds the TFRecord shards (`sat_tf.pipelines.extract` writes them), the vocabulary file they
were encoded with (`VOCAB`) and `manifest.json` (`MANIFEST`), written last and atomically: the encoder, the feature
shape, the vocabulary checksum, per-split counts with every shard's size and sha256, the caption-length histogram
and every skipped image with its reason. Training, evaluation and export read it (`load_manifest`); before a shard
is read, `check_features` compares its size (and by default its sha256) with the manifest, so a truncated or corrupt
shard is named instead of surfacing as a DataLossError mid-epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

from sat_tf.files import write_json_atomic
from sat_tf.pipelines import tfrecord

MANIFEST = "manifest.json"
VOCAB = "vocab.txt"


class FeatureError(ValueError):
    """Feature shards that cannot be used as they are (missing, truncated, corrupt, from another setup)."""


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str, payload) -> None:
    """Manifests and sidecars: sorted keys, written atomically (`sat_tf.files.write_json_atomic`)."""
    write_json_atomic(path, payload, sort_keys=True)


def load_manifest(features_dir: str) -> dict:
    """Reads `features_dir/manifest.json` with a clear error where it is missing or not JSON."""
    path = os.path.join(features_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise FeatureError(f"{path} not found: extract features first (python -m sat_tf.pipelines.extract), or "
                           f"the extraction did not finish (rerun it to resume)") from None
    except json.JSONDecodeError as e:
        raise FeatureError(f"{path} is not valid JSON: {e}") from e
    if manifest.get("format") != tfrecord.FORMAT:
        raise FeatureError(f"{path}: format {manifest.get('format')!r} is not {tfrecord.FORMAT!r}")
    return manifest


def check_features(features_dir: str, split: str, *, manifest: dict | None = None,
                   vocabulary_checksum: str | None = None, feature_shape: Sequence[int] | None = None,
                   verify: str = "sha256") -> list[str]:
    """The split's shard paths, after checking them against the manifest; raises FeatureError naming the file.

    Args:
        features_dir: str. Directory with manifest.json and shards.
        split: str. "train", "val", ...
        manifest: dict or None. Already loaded manifest.
        vocabulary_checksum: str or None. The vocabulary the model uses; must be the shards' vocabulary.
        feature_shape: (L, D) or None. What the model expects.
        verify: "sha256" (hash every shard: a flipped byte is caught), "size" (only the byte count: a truncated
            shard is caught) or "none".
    """
    manifest = manifest or load_manifest(features_dir)
    where = os.path.join(features_dir, MANIFEST)
    if split not in manifest["splits"]:
        raise FeatureError(f"{where} has no {split!r} split; it has {sorted(manifest['splits'])}")
    if vocabulary_checksum is not None and manifest["vocabulary"]["checksum"] != vocabulary_checksum:
        raise FeatureError(f"{where}: the shards were encoded with vocabulary {manifest['vocabulary']['checksum'][:12]}"
                           f"..., the model uses {vocabulary_checksum[:12]}... (another vocab.txt)")
    if feature_shape is not None and list(manifest["feature_shape"]) != list(feature_shape):
        raise FeatureError(f"{where}: features are {tuple(manifest['feature_shape'])} (encoder "
                           f"{manifest['encoder']['name']}/{manifest['encoder']['layer']}), the model expects "
                           f"{tuple(feature_shape)}")
    paths = []
    for shard in manifest["splits"][split]["shards"]:
        path = os.path.join(features_dir, shard["file"])
        if not os.path.exists(path):
            raise FeatureError(f"shard {path} listed in {where} is missing; {_redo(where)}")
        if verify != "none":
            size = os.path.getsize(path)
            if size != shard["bytes"]:
                raise FeatureError(f"shard {path} is {size} bytes, the manifest says {shard['bytes']}: truncated or "
                                   f"damaged; {_redo(where, path)}")
        if verify == "sha256" and sha256_file(path) != shard["sha256"]:
            raise FeatureError(f"shard {path} does not match its sha256 in {where}: corrupt; {_redo(where, path)}")
        paths.append(path)
    if not paths:
        raise FeatureError(f"{where}: the {split!r} split has no shards")
    return paths


def _redo(manifest_path: str, shard_path: str | None = None) -> str:
    """How to rewrite damaged shards. The manifest must go too: while it exists, rerunning the extraction returns
    it as it is (`prepare_features`) and rewrites nothing; without it, the extraction keeps every intact shard."""
    what = f"{shard_path} and {manifest_path}" if shard_path else manifest_path
    return f"delete {what}, then rerun the extraction: it rewrites only the missing shard(s)"
