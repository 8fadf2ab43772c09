"""Bad and unusual image files, through both entry points that read photos: feature extraction
(`extract_features`, which must skip a bad file with its reason in manifest.json and keep going) and captioning
(`python -m sat_tf.caption`, which must report a bad file on its own line and caption the others).

One test per case and entry point; the cases and what each must decode to are in `image_cases.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sat_tf.images.load import ImageError, load_and_resize, load_image
from sat_tf.images.resize import resize_image
from sat_tf.pipelines import tfrecord
from sat_tf.pipelines.extract import extract_features
from sat_tf.pipelines.sources.record import CaptionRecord
from tests.pipelines import helpers
from tests.robustness import image_cases
from tests.robustness.image_cases import CASES, HUGE, HUGE_COLOUR

CAPTION = "a red dog runs on the grass"
BAD = [case for case in CASES if case.error]
GOOD = [case for case in CASES if not case.error]


def _ids(case):
    return case.name


def read_shards(out_dir: str, manifest: dict) -> dict[str, dict]:
    """Every record of every shard, by image id."""
    files = [os.path.join(out_dir, shard["file"]) for split in manifest["splits"].values()
             for shard in split["shards"]]
    shape = tuple(manifest["feature_shape"])
    out = {}
    for serialized in tf.data.TFRecordDataset(files):
        example = tfrecord.parse_example(serialized, shape)
        out[example["image_id"].numpy().decode()] = {k: v.numpy() for k, v in example.items()}
    return out


@pytest.fixture(scope="module")
def extraction(case_images, tmp_path_factory):
    """One extraction run over every case file (fake encoder: quadrant mean colours): (manifest, records by id)."""
    records = [CaptionRecord(case.name, case_images[case.name], (CAPTION,), "train") for case in CASES]
    out = str(tmp_path_factory.mktemp("extracted"))
    manifest = extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), out,
                                max_caption_length=6, shard_size=8, batch_size=4, progress=False)
    return manifest, read_shards(out, manifest)


def _peak_rss_growth(fn):
    """(fn(), growth of the peak resident memory in bytes while it ran, or None where /proc cannot tell)."""
    def status(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak) to the current resident size
        before = status("VmRSS")
    except OSError:
        return fn(), None
    out = fn()
    return out, status("VmHWM") - before


# Per-byte bounds for a 10000 x 10000 photo resized to 224. A PNG must be decoded whole: Pillow holds it as 4 bytes
# a pixel, its array 3 more, the tensor 3 more; before the fix (a float32 copy and an EXIF copy) it was ~21.
HUGE_BYTES_PER_PIXEL = {"huge_png": 12.5, "huge_jpeg": 1.0}  # the JPEG is decoded at 1/8 scale by `draft`
HUGE_SECONDS = 60.0


def _check_huge(case, path):
    """Decodes a 10000 x 10000 photo for a 224 encoder, with its time and peak memory; returns (224, 224, 3)."""
    start = time.perf_counter()
    resized, growth = _peak_rss_growth(lambda: load_and_resize(path, 224))
    seconds = time.perf_counter() - start
    print(f"{case.file_name}: {seconds:.1f} s, peak memory growth "
          f"{'unknown' if growth is None else f'{growth / 2**20:.0f} MiB'}")
    assert resized.shape == (224, 224, 3)
    case.check(resized)
    assert seconds < HUGE_SECONDS, f"{path}: {seconds:.0f} s to decode and resize a {HUGE}x{HUGE} photo"
    if growth is not None:
        limit = HUGE_BYTES_PER_PIXEL[case.name] * HUGE * HUGE
        assert growth < limit, (f"{path}: decoding a {HUGE}x{HUGE} photo grew the peak memory by "
                                f"{growth / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)")


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_extraction(case, case_images, extraction):
    """load_image decodes the file to the right pixels or refuses it with its reason; extraction agrees: the file
    is in the shards with exactly those pixels' features, or in manifest.json's skipped list with the reason."""
    path = case_images[case.name]
    manifest, features = extraction
    skipped = {item["image_id"]: item for item in manifest["skipped"]}
    if case.error:
        with pytest.raises(ImageError) as raised:
            load_image(path)
        assert raised.value.path == path and str(raised.value).startswith(f"{path}: ")
        assert case.error in raised.value.reason, raised.value.reason
        assert case.name in skipped, f"{path} is neither in the shards nor in manifest.json's skipped list"
        assert skipped[case.name]["path"] == path and case.error in skipped[case.name]["reason"]
        assert case.name not in features
        return
    assert case.name not in skipped, f"{path} was skipped: {skipped.get(case.name)}"
    record = features[case.name]
    assert record["image_path"].decode() == path and [c.decode() for c in record["captions"]] == [CAPTION]
    if case.huge:
        _check_huge(case, path)
        expected = np.broadcast_to(np.asarray(HUGE_COLOUR) / 255.0, record["annotations"].shape)
        np.testing.assert_allclose(record["annotations"], expected, atol=3 / 255)
        return
    case.check(load_image(path))
    expected = helpers.fake_encoder(load_and_resize(path, helpers.IMAGE_SIZE)[None])[0]
    np.testing.assert_array_equal(record["annotations"], expected.astype(np.float16))


def test_extraction_loses_nothing(case_images, extraction):
    """Every record is either in a shard or in the skipped list, and the counts in the manifest say so."""
    manifest, features = extraction
    skipped = [item["image_id"] for item in manifest["skipped"]]
    assert sorted(features) + sorted(skipped) == sorted(case.name for case in GOOD) + sorted(c.name for c in BAD)
    assert manifest["splits"]["train"]["images"] == len(GOOD)
    assert sum(manifest["skipped_counts"].values()) == len(BAD)


def test_path_with_a_nul_byte_is_an_image_error():
    """open() refuses such a path with ValueError, which used to escape load_image (and stop a caption batch)."""
    with pytest.raises(ImageError, match="cannot read file"):
        load_image("photo\x00.jpg")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation, tmp_path):
    """All eight EXIF orientations (the JPEG case above is 6): the pixels come out upright."""
    path = str(tmp_path / f"o{orientation}.jpg")
    image_cases.write_exif_rotated(path, orientation)
    image_cases.check_upright(load_image(path))


def test_resize_of_uint8_equals_resize_of_float32():
    """`resize_image` resizes uint8 without a float32 copy of the photo; the pixels are the same to the bit."""
    rng = np.random.default_rng(0)
    for shape in [(37, 53, 3), (480, 640, 3), (1, 1, 3), (2, 500, 3), (224, 224, 3), (3, 20, 30, 3)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(resize_image(pixels, 224).numpy(),
                                      resize_image(pixels.astype(np.float32), 224).numpy())
        assert resize_image(pixels, 224).dtype == tf.float32


def test_resize_at_scale_one_is_the_identity_so_load_and_resize_may_skip_it(tmp_path):
    """`load_and_resize` returns an S x S photo untouched; that is only right because `resize_image` (what the
    exported graph runs) is the identity at scale 1, to the bit, for any pixels and sizes."""
    rng = np.random.default_rng(1)
    for size in (1, 7, 224, 260):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize_image(pixels, size).numpy(), pixels.astype(np.float32))
    # Other sizes go through the traced uint8 resizer: the same pixels as rounding the eager op.
    for shape in [(224, 224, 3), (188, 250, 3), (37, 53, 3)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        path = str(tmp_path / f"{shape[0]}x{shape[1]}.png")
        Image.fromarray(pixels).save(path)
        want = np.round(resize_image(pixels, 224).numpy()).astype(np.uint8)
        np.testing.assert_array_equal(load_and_resize(path, 224), want)


# Captioning ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captioned(case_images, tmp_path_factory):
    """`python -m sat_tf.caption` (in process) on every case file at once, with an untrained model over the real
    EfficientNet-Lite0 encoder: (exit code, {path: caption line}, {path: error line})."""
    from sat_tf import config as cfg
    from sat_tf.caption import main as caption_main
    from sat_tf.models.encoder import encoder_spec
    from sat_tf.text.vocabulary import Vocabulary
    from sat_tf.training import workdir as wd

    workdir = str(tmp_path_factory.mktemp("caption_workdir"))
    model, train, data = cfg.scenes_default()
    vocabulary = Vocabulary.build([CAPTION, "a blue square on the left"], min_count=1)
    spec = encoder_spec(data.encoder, data.encoder_layer, image_size=data.image_size)
    model = dataclasses.replace(model, vocab_size=len(vocabulary), feature_dim=spec.feature_dim, embedding_dim=16,
                                units=32, attention_dim=16)
    wd.save_experiment(workdir, model, train, data)
    vocabulary.save(os.path.join(workdir, wd.VOCAB))
    checkpoint = wd.checkpoint_for(wd.build_captioner(model, seed=0))
    tf.train.CheckpointManager(checkpoint, os.path.join(workdir, wd.BEST), max_to_keep=1).save(checkpoint_number=1)

    paths = [case_images[case.name] for case in CASES]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = caption_main(["--workdir", workdir, *paths, "--beam-size", "2", "--max-length", "4"])

    def by_path(text):
        lines = {}
        for line in text.splitlines():
            path, sep, rest = line.partition("\t")
            if sep and path in paths:
                assert path not in lines, f"{path} reported twice"
                lines[path] = rest
        return lines

    return code, by_path(out.getvalue()), by_path(err.getvalue())


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_caption(case, case_images, captioned):
    """A bad file gets `PATH<TAB>error: REASON` on stderr; a good one gets `PATH<TAB>caption` on stdout."""
    path = case_images[case.name]
    _, captions, errors = captioned
    if case.error:
        assert path in errors and path not in captions, f"{path}: no error line"
        assert errors[path].startswith("error: ") and case.error in errors[path], errors[path]
    else:
        assert path in captions and path not in errors, f"{path}: {errors.get(path)}"


def test_caption_reports_bad_files_and_captions_the_rest(captioned):
    code, captions, errors = captioned
    assert code == 1  # some files failed
    assert len(captions) == len(GOOD) and len(errors) == len(BAD)
