"""A tiny but real training setup for the fault tests: embedded scenes, features from the fake backbone (see
`fake_backbone.py`) written by the real `prepare_features`, and the small model of tests/test_train.py."""

from __future__ import annotations

import dataclasses

import pytest
import tensorflow as tf

from sat_tf import config as cfg


def tiny_configs(features_dir: str, epochs: int = 2, **train):
    """(model, train, data) configs: 8 scenes per split at 64 px (a 4x4 grid of 112-d features), a 32-unit LSTM."""
    model, train_config, data = cfg.scenes_default()
    model = dataclasses.replace(model, embedding_dim=16, units=32, attention_dim=16, dropout=0.3)
    train_config = dataclasses.replace(train_config, epochs=epochs, batch_size=16, beam_size=2, patience=0,
                                       **train)
    data = dataclasses.replace(data, max_images=8, features_dir=features_dir, eval_images=4, image_size=64)
    return model, train_config, data


def prepare_with_fake_backbone(data_config, features_dir: str) -> dict:
    """`prepare_features` exactly as `train` calls it, with the fake backbone standing in for the CNN."""
    from sat_tf.pipelines.prepare import prepare_features
    from tests.robustness import fake_backbone

    with pytest.MonkeyPatch.context() as patch:
        fake_backbone.install(patch)
        return prepare_features(data_config, features_dir, progress=False)


def checkpoint_values(prefix: str) -> dict:
    """Every saved tensor of a checkpoint except the save counter and the object graph."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def trained_workdir(root: str, attention: str = "soft", epochs: int = 1) -> str:
    """A work dir under `root` trained `epochs` epoch(s) on fake-backbone features (prepared under root/features);
    caption it with the fake backbone installed (`fake_backbone.install`)."""
    import os

    from sat_tf.training import trainer

    features_dir = os.path.join(root, "features")
    model, train, data = tiny_configs(features_dir, epochs=epochs)
    prepare_with_fake_backbone(data, features_dir)
    workdir = os.path.join(root, attention)
    trainer.train(workdir, dataclasses.replace(model, attention=attention), train, data, verbose=0,
                  final_evaluation=False, tensorboard=False, log=lambda line: None)
    return workdir
