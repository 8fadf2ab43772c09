"""ExportSource: the encoder rebuilt for export must be the one the training features came from."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from sat_tf.export.source import load_source
from sat_tf.models.encoder import encoder_spec
from tests.export.conftest import IMAGE_SIZE


def _with_manifest(workdir: str, tmp_path, **encoder_overrides) -> str:
    copy = str(tmp_path / "workdir")
    shutil.copytree(workdir, copy)
    os.makedirs(os.path.join(copy, "features"))
    recorded = {**encoder_spec("efficientnet_lite0", None, "imagenet", IMAGE_SIZE).to_dict(), **encoder_overrides}
    with open(os.path.join(copy, "features", "manifest.json"), "w") as f:
        json.dump({"encoder": recorded}, f)
    return copy


def test_matching_feature_manifest_is_accepted(workdir, tmp_path):
    source = load_source(_with_manifest(workdir, tmp_path), "latest")
    assert source.encoder_spec.image_size == IMAGE_SIZE and source.max_tokens == 13


def test_encoder_differing_from_the_feature_manifest_is_refused(workdir, tmp_path):
    copy = _with_manifest(workdir, tmp_path, weights="/data/finetuned_lite0.npz")
    with pytest.raises(ValueError, match=r"differs from the one in .*manifest.json.*weights"):
        load_source(copy, "latest")


def test_encoder_depth_must_match_the_decoder(source):
    from sat_tf.config import DataConfig
    from sat_tf.export.source import source_from_models

    with pytest.raises(ValueError, match="D=80 features but the decoder expects feature_dim=112"):
        source_from_models(source.captioner, source.vocabulary, source.model_config, source.train_config,
                           DataConfig(image_size=IMAGE_SIZE, encoder_layer="stage4"), encoder_weights=None)
