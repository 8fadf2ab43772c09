"""A run killed at any point and rerun must end exactly where an uninterrupted run ends: identical shard bytes for
extraction, the same final weights for training.

The default test interrupts extraction in process at seeded random points in each window that matters (while
decoding, while encoding, after a shard's sidecar is written but before the shard is renamed, before the manifest
is written). The slow tests SIGKILL the real commands (`python -m sat_tf.pipelines.extract`,
`python -m sat_tf.train --quick`) at seeded random times and rerun them.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.pipelines import extract as extract_module
from sat_tf.pipelines import tfrecord
from sat_tf.pipelines.extract import extract_features
from tests.pipelines import helpers
from tests.robustness import tiny_run


class Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so no `except Exception` in the code under test can swallow it."""


def _file_bytes(directory: str) -> dict[str, bytes]:
    """Every file an extraction leaves (shards, sidecars, manifest, vocabulary) by name."""
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def test_extraction_interrupted_at_random_points_resumes_to_identical_files(tmp_path, monkeypatch):
    paths = helpers.write_images(str(tmp_path / "images"), 24)
    records = helpers.make_records(paths)
    kwargs = dict(max_caption_length=6, shard_size=5, batch_size=3, progress=False)
    whole = str(tmp_path / "whole")
    manifest = extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), whole,
                                **kwargs)
    expected = _file_bytes(whole)

    real_replace, real_write_json = os.replace, extract_module.write_json
    rng = np.random.default_rng(2024)
    out = str(tmp_path / "interrupted")
    kills = []
    windows = ["decode", "encode", "before_rename", "before_sidecar"]
    schedule = [str(w) for w in rng.permutation(windows)] + [str(w) for w in rng.choice(windows, 3)]
    for window in schedule + ["before_manifest"]:  # the manifest is the last thing written
        after = int(rng.integers(0, 2))  # let this many events of that kind pass first
        seen = [0]

        def strike(kind):
            if kind == window:
                seen[0] += 1
                if seen[0] > after:
                    raise Killed(f"{window} #{seen[0]}")

        def load(path, size):
            strike("decode")
            return extract_module.load_and_resize(path, size)

        def encoder(images):
            strike("encode")
            return helpers.fake_encoder(images)

        def replace(src, dst):
            if dst.endswith(".tfrecord"):
                strike("before_rename")
            return real_replace(src, dst)

        def write_json(path, payload):
            strike("before_manifest" if path.endswith("manifest.json") else "before_sidecar")
            return real_write_json(path, payload)

        monkeypatch.setattr(extract_module.os, "replace", replace)
        monkeypatch.setattr(extract_module, "write_json", write_json)
        try:
            extract_features(records, encoder, helpers.ENCODER_INFO, helpers.vocabulary(), out, load_image=load,
                             **kwargs)
        except Killed as killed:
            kills.append(str(killed))
        monkeypatch.undo()
    print(f"interrupted at: {kills}")
    assert {kill.split()[0] for kill in kills} == set(windows) | {"before_manifest"}, kills

    assert extract_features(records, helpers.fake_encoder, helpers.ENCODER_INFO, helpers.vocabulary(), out,
                            **kwargs) == manifest
    assert _file_bytes(out) == expected, f"files differ after the kills {kills}"


def test_records_are_serialized_canonically():
    """Shard bytes must not depend on the process that wrote them: an Example's features are a protobuf map, whose
    default serialization order follows the process's string hash seed, so a resumed run (a new process) wrote
    other bytes than an uninterrupted one (found by the slow SIGKILL test below, which checks it across
    processes). Every record must be the deterministic, key-sorted serialization."""
    vocabulary = helpers.vocabulary()
    record = tfrecord.serialize_example("img1", "/x/img1.jpg", "train", np.ones((4, 3), np.float32),
                                        helpers.CAPTIONS[:2], vocabulary.encode(helpers.CAPTIONS[:2], 6))
    example = tf.train.Example.FromString(record)
    assert example.SerializeToString(deterministic=True) == record


# Real SIGKILLs -------------------------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _run(command: list[str], log: str, kill_after: float | None = None, started=lambda: True,
         events: dict | None = None, timeout: float = 900) -> tuple[int, float, dict[str, float]]:
    """Runs `command`; with `kill_after`, sends SIGKILL that many seconds after `started()` first holds.

    Returns (return code, seconds from start to when `started()` held, {event: seconds from start to when the
    predicate `events[event]` first held}).
    """
    events = events or {}
    seen: dict[str, float] = {}
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
        begin = time.monotonic()
        marker = None
        while process.poll() is None:
            now = time.monotonic()
            if marker is None and started():
                marker = now
            for name, holds in events.items():
                if name not in seen and holds():
                    seen[name] = now - begin
            if kill_after is not None and marker is not None and now - marker >= kill_after:
                process.kill()  # SIGKILL
                break
            if now - begin > timeout:
                process.kill()
                raise AssertionError(f"{command} took more than {timeout} s; log: {log}")
            time.sleep(0.05)
        code = process.wait()
    return code, (marker if marker is not None else time.monotonic()) - begin, seen


def _written_since(pattern: str, since: float):
    """A predicate: some file matching `pattern` was written at or after `since` (time.time()), i.e. by this run."""
    def check() -> bool:
        for path in glob.glob(pattern):
            try:
                if os.path.getmtime(path) >= since:
                    return True
            except FileNotFoundError:  # renamed or removed meanwhile
                pass
        return False
    return check


def _tail(log: str) -> str:
    return open(log, errors="replace").read()[-3000:]


def _flickr8k_layout(root: str, count: int) -> str:
    """A Flickr8k layout of `count` small photos (3 captions each), 3/4 train, 1/4 dev."""
    images = os.path.join(root, "Flicker8k_Dataset")
    paths = helpers.write_images(images, count)
    text = os.path.join(root, "Flickr8k_text")
    os.makedirs(text)
    names = [os.path.basename(p) for p in paths]
    with open(os.path.join(text, "Flickr8k.token.txt"), "w") as f:
        for i, name in enumerate(names):
            for k in range(3):
                f.write(f"{name}#{k}\t{helpers.CAPTIONS[(i + k) % len(helpers.CAPTIONS)]}\n")
    with open(os.path.join(text, "Flickr_8k.trainImages.txt"), "w") as f:
        f.write("\n".join(names[: count * 3 // 4]) + "\n")
    with open(os.path.join(text, "Flickr_8k.devImages.txt"), "w") as f:
        f.write("\n".join(names[count * 3 // 4:]) + "\n")
    return root


@pytest.mark.slow
def test_extraction_killed_with_sigkill_resumes_to_identical_files(tmp_path):
    """`python -m sat_tf.pipelines.extract` (real EfficientNet-Lite0) on 96 photos in 24 shards, SIGKILLed at 3
    seeded random times while it writes shards, then rerun to the end: every file equals an uninterrupted run's."""
    root = _flickr8k_layout(str(tmp_path / "flickr8k"), 96)

    def command(out):
        return [sys.executable, "-m", "sat_tf.pipelines.extract", "--dataset", "flickr8k", "--data-dir", root,
                "--out", out, "--layer", "stage5", "--min-count", "1", "--shard-size", "4"]

    def writing(out):  # a shard is being written (its temporary file exists) or one has been renamed already
        return lambda: bool(glob.glob(os.path.join(out, "*.tmp")) or glob.glob(os.path.join(out, "*.tfrecord")))

    whole, log = str(tmp_path / "whole"), str(tmp_path / "whole.log")
    start = time.monotonic()
    code, startup, _ = _run(command(whole), log, started=writing(whole))
    assert code == 0, _tail(log)
    writing_seconds = time.monotonic() - start - startup

    out, log = str(tmp_path / "killed"), str(tmp_path / "killed.log")
    rng = np.random.default_rng(11)
    kills = []
    for attempt in range(3):
        finished = len(glob.glob(os.path.join(out, "*.tfrecord")))
        delay = float(rng.uniform(0.1, 0.9)) * writing_seconds * (24 - finished) / 24
        # started: a shard file (.tmp, .tfrecord, sidecar) written by this run; a killed run's stale .tmp does not count
        code, _, _ = _run(command(out), log, kill_after=delay,
                          started=_written_since(os.path.join(out, "*.t*"), time.time()))
        kills.append((round(delay, 2), code, len(glob.glob(os.path.join(out, "*.tfrecord")))))
    print(f"kills (delay s, return code, finished shards): {kills}")
    assert any(code == -9 for _, code, _ in kills), f"no run was killed: {kills}"
    code, _, _ = _run(command(out), log)
    assert code == 0, _tail(log)
    assert _file_bytes(out) == _file_bytes(whole), f"files differ after the kills {kills}"


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    """`python -m sat_tf.train --quick --set train.epochs=4` SIGKILLed 3 times at seeded random times (in epoch 1
    before any checkpoint; in epoch 2 just after ckpt-1; in epoch 3 of a run resumed from ckpt-1), then rerun to
    the end: the final checkpoint (weights, Adam slots, RNG states, progress) equals an uninterrupted run's. The
    features are prepared once beforehand (fake backbone) so the runs spend their time training."""
    from sat_tf.train import build_parser, configs_from_args

    features = str(tmp_path / "features")
    data = configs_from_args(build_parser().parse_args(["--quick", "--features-dir", features]))["data"]
    tiny_run.prepare_with_fake_backbone(data, features)

    def command(workdir):
        return [sys.executable, "-m", "sat_tf.train", "--quick", "--workdir", workdir, "--features-dir", features,
                "--verbose", "0", "--set", "train.epochs=4"]

    def watch(workdir, since):  # config.json is (re)written first thing by `train`, once Python is up
        index = os.path.join(workdir, "checkpoints", "ckpt-{}.index")
        return {"work": _written_since(os.path.join(workdir, "config.json"), since),
                "a checkpoint": _written_since(index.format("*"), since),
                "ckpt-1": _written_since(index.format(1), since), "ckpt-2": _written_since(index.format(2), since)}

    whole, log = str(tmp_path / "whole"), str(tmp_path / "whole.log")
    code, _, seen = _run(command(whole), log, events=watch(whole, time.time()))
    assert code == 0 and {"work", "ckpt-1", "ckpt-2"} <= set(seen), (seen, _tail(log))
    first, later = seen["ckpt-1"] - seen["work"], seen["ckpt-2"] - seen["ckpt-1"]  # epoch 1 includes the tracing

    # Each kill: (what must have happened in that run first, a seeded random delay after it).
    rng = np.random.default_rng(5)
    schedule = [("work", rng.uniform(0.2, 0.9) * first),  # in epoch 1: nothing saved yet
                ("a checkpoint", rng.uniform(0.05, 0.9) * later),  # in epoch 2, just after ckpt-1
                ("a checkpoint", rng.uniform(0.05, 0.9) * later)]  # in epoch 3 of a run resumed from ckpt-1
    workdir, log = str(tmp_path / "killed"), str(tmp_path / "killed.log")
    checkpoints = os.path.join(workdir, "checkpoints")
    kills = []
    for after, delay in schedule:
        code, _, _ = _run(command(workdir), log, kill_after=float(delay),
                          started=watch(workdir, time.time())[after])
        kills.append((after, round(float(delay), 1), code,
                      sorted(f for f in os.listdir(checkpoints) if f.endswith(".index"))
                      if os.path.isdir(checkpoints) else []))
    print(f"baseline: epoch 1 {first:.0f} s, epoch 2 {later:.1f} s; kills (after, delay s, return code, "
          f"checkpoints): {kills}")
    assert sum(code == -9 for _, _, code, _ in kills) >= 2, f"runs were not killed: {kills}"
    code, _, _ = _run(command(workdir), log)
    assert code == 0, _tail(log)

    expected = tiny_run.checkpoint_values(tf.train.latest_checkpoint(os.path.join(whole, "checkpoints")))
    actual = tiny_run.checkpoint_values(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")))
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    print(f"bit-identical: {all(np.array_equal(actual[n], expected[n]) for n in expected)}")
