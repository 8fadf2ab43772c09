"""Session fixtures for the export tests: a tiny trained work dir and its exports, each made once per session.

The decoder is small (E=16, H=32, A=16) and is trained for a few seconds to caption eight synthetic images with
eight different captions, so that decoding is decisive (no near-ties for numerics to flip) and the exported models
have something real to agree on. The encoder is the real EfficientNet-Lite0 with its ImageNet weights at 96 px
(a 6x6 grid of D=112 features: L=36). Training features come from the Pillow pipeline (`sat_tf.images`), so a
served model that decodes bytes in-graph reproduces the training captions only if it sees the same pixels.
"""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sat_tf.config import DataConfig, ModelConfig, TrainConfig
from sat_tf.images.load import load_and_resize
from sat_tf.models.encoder import build_encoder
from sat_tf.text.vocabulary import Vocabulary
from sat_tf.training.workdir import build_captioner, checkpoint_for, save_experiment

IMAGE_SIZE = 96
MAX_LENGTH = 12  # words; decoded captions have up to MAX_LENGTH + 1 tokens
WORDS = ("a dog cat man woman child runs sits jumps on the grass beach snow red blue ball water in with two "
         "people street bike").split()
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "JPEG", "PNG", "JPEG")


def encode_image(image: np.ndarray | Image.Image, fmt: str, **kwargs) -> bytes:
    """numpy uint8 (H, W, C) (or a Pillow image) -> encoded bytes with Pillow."""
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def synthetic_photo(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """A smooth random colour field with a block of flat colour: uint8 (H, W, 3)."""
    coarse = (rng.rand(6, 6, 3) * 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR)).copy()
    top, left = rng.randint(0, height // 2), rng.randint(0, width // 2)
    image[top:top + height // 3, left:left + width // 3] = rng.randint(0, 256, size=3)
    return image


def sample_images() -> list[bytes]:
    """Eight encoded test images in five formats and several sizes (the `images` fixture)."""
    rng = np.random.RandomState(7)
    out = []
    for i, fmt in enumerate(FORMATS):
        array = synthetic_photo(rng, rng.randint(60, 200), rng.randint(60, 200))
        kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 92} if fmt == "JPEG" else {}
        out.append(encode_image(array if fmt != "GIF" else array // 32 * 32, fmt, **kwargs))
    return out


def sample_captions() -> list[str]:
    """The caption the tiny model learns for each test image (2 to MAX_LENGTH words; the `captions` fixture)."""
    rng = np.random.RandomState(3)
    return [" ".join(rng.choice(WORDS, size=rng.randint(2, MAX_LENGTH + 1))) for _ in range(8)]


def build_workdir(path: str, images: list[bytes], captions: list[str]) -> str:
    """Writes a sat_tf work dir at `path` (config.json, vocab.txt, a checkpoint) with a decoder trained for a few
    seconds to caption `images` with `captions`; returns `path`. Also used outside pytest (tests/lite/make_model.py).

    Args:
        path: str. An existing, empty folder.
        images: encoded images (`sample_images`).
        captions: one caption per image (`sample_captions`).
    """
    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *WORDS])
    model_config = ModelConfig(vocab_size=vocabulary.size, feature_dim=112, embedding_dim=16, units=32,
                               attention_dim=16, dropout=0.0)
    save_experiment(path, model_config, TrainConfig(max_length=MAX_LENGTH), DataConfig(image_size=IMAGE_SIZE))
    vocabulary.save(f"{path}/vocab.txt")
    encoder = build_encoder("efficientnet_lite0", None, "imagenet", IMAGE_SIZE)
    pixels = np.stack([load_and_resize(data, IMAGE_SIZE) for data in images])  # (8, S, S, 3) the Pillow pipeline
    annotations = encoder(pixels.astype(np.float32))  # (8, L, D)
    tokens = vocabulary.encode(captions, MAX_LENGTH)  # (8, T)
    keras.utils.set_random_seed(0)
    captioner = build_captioner(model_config, seed=0)
    captioner.compile(optimizer=keras.optimizers.Adam(2e-2))
    data = tf.data.Dataset.from_tensors({"annotations": annotations, "tokens": tokens}).repeat(200)
    captioner.fit(data, epochs=1, verbose=0)
    learnt = captioner.generate(annotations, beam_size=1, max_length=MAX_LENGTH + 1)["tokens"].numpy()
    assert vocabulary.decode(learnt) == captions, "the fixture model did not learn its captions"
    checkpoint_for(captioner).save(f"{path}/checkpoints/ckpt")
    return path


@pytest.fixture(scope="session")
def images() -> list[bytes]:
    """Eight encoded test images in five formats and several sizes."""
    return sample_images()


@pytest.fixture(scope="session")
def captions() -> list[str]:
    """The caption the tiny model learns for each test image (2 to MAX_LENGTH words)."""
    return sample_captions()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, images, captions) -> str:
    """A sat_tf work dir with config.json, vocab.txt and a checkpoint of a decoder trained on the test images."""
    return build_workdir(str(tmp_path_factory.mktemp("workdir")), images, captions)


@pytest.fixture(scope="session")
def source(workdir):
    """The ExportSource of the work dir (decoder restored from the checkpoint, encoder rebuilt)."""
    from sat_tf.export.source import load_source

    return load_source(workdir, "latest")


@pytest.fixture(scope="session")
def saved_model_dir(source, tmp_path_factory) -> str:
    """The SavedModel version directory, exported once (beam size 3)."""
    from sat_tf.export.saved_model import export_saved_model

    return export_saved_model(source, str(tmp_path_factory.mktemp("serving")), name="captioner", version=1)


@pytest.fixture(scope="session")
def served(saved_model_dir):
    """The SavedModel loaded with tf.saved_model.load (as TF2 clients and the converter see it)."""
    from sat_tf.export.saved_model import load_saved_model

    return load_saved_model(saved_model_dir)


@pytest.fixture(scope="session")
def tflite_export(source, tmp_path_factory):
    """(directory, artifacts) of the TFLite export, every model and variant, converted once."""
    from sat_tf.export.tflite import export_tflite

    directory = str(tmp_path_factory.mktemp("tflite"))
    return directory, export_tflite(source, directory, measure_latency=False, verbose=False)
