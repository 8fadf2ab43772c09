"""Images -> encoder -> sharded TFRecord features, resumable, in constant memory.

`extract_features` walks the records split by split in fixed shards of `shard_size` images (shard k of a split
always holds records [k * shard_size, (k + 1) * shard_size), so the plan does not depend on what was done before).
Each shard is written to a temporary name, hashed, described by a small JSON sidecar, and only then renamed to
its final name: a killed run leaves at most a temporary file, which the next run deletes, and a file with a
final name is always complete. A rerun skips every finished shard, so it resumes where the killed run stopped
and ends with the same bytes as an uninterrupted run.

Images that cannot be used are skipped and counted with the reason (see `sat_tf.images`): the run never stops
for one bad photo. `manifest.json` (written last, atomically; `sat_tf.pipelines.manifest`) records the encoder, the
feature shape, the vocabulary checksum, per-split counts and shard hashes, the caption-length histogram (to size
epochs exactly), and every skipped image with its reason.

With `mirrored=True` every record also holds the encoder's features of the horizontally mirrored photo (the same
pixels, columns reversed): the views that training augmentation (`DataConfig.mirror_probability`) and test-time
averaging (`evaluate --mirror`) read. It costs a second encoder pass per image and twice the disk.

Decoding runs in a thread pool (Pillow releases the GIL) while the encoder runs on the previous batch.

`python -m sat_tf.pipelines.extract` (`__main__.py`) reads a dataset, builds the vocabulary and extracts
(`sat_tf.pipelines.prepare.prepare_features`).

Shapes: B batch, S image side, L locations, D depth.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import glob
import itertools
import json
import os
import sys
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from sat_tf.images.load import ImageError, load_and_resize
from sat_tf.pipelines import tfrecord
from sat_tf.pipelines.manifest import MANIFEST, VOCAB, sha256_file, write_json
from sat_tf.pipelines.sources.record import CaptionRecord
from sat_tf.text.vocabulary import Vocabulary

_SIDECAR = ".json"
_TMP = ".tmp"


@dataclasses.dataclass
class _ShardResult:
    """What one finished shard holds; stored as its sidecar JSON."""

    file: str
    split: str
    images: int
    captions: int
    bytes: int
    sha256: str
    length_histogram: dict[str, int]
    skipped: list[dict[str, str]]
    encoder: dict
    vocabulary_checksum: str
    max_caption_length: int
    mirrored_views: bool = False


class Progress:
    """A one-line progress bar with images/sec, written to `stream` (stderr by default)."""

    def __init__(self, total: int, label: str = "extract", stream=None, every: float = 0.5):
        self.total, self.label, self.stream, self.every = total, label, stream or sys.stderr, every
        self.done = self.skipped = 0
        self.start = self.last = time.perf_counter()

    def update(self, done: int = 0, skipped: int = 0, force: bool = False) -> None:
        self.done += done
        self.skipped += skipped
        now = time.perf_counter()
        if force or now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r{self.label} [{'=' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                              f"images  {rate:6.1f} img/s  skipped {self.skipped}")
            self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
        self.stream.write("\n")
        self.stream.flush()


def plan_shards(records: Sequence[CaptionRecord], shard_size: int) -> list[tuple[str, list[CaptionRecord]]]:
    """(final file name, records) for every shard, split by split in first-seen split order."""
    by_split: dict[str, list[CaptionRecord]] = collections.OrderedDict()
    for record in records:
        by_split.setdefault(record.split, []).append(record)
    plan = []
    for split, items in by_split.items():
        count = (len(items) + shard_size - 1) // shard_size
        for index in range(count):
            plan.append((tfrecord.shard_name(split, index, count), items[index * shard_size:(index + 1) * shard_size]))
    return plan


def extract_features(records: Sequence[CaptionRecord], encoder: Callable, encoder_info: dict, vocabulary: Vocabulary,
                     out_dir: str, *, max_caption_length: int = 20, shard_size: int = 256, batch_size: int = 32,
                     num_threads: int = 4, progress: bool = True, reader_report: dict | None = None,
                     load_image: Callable[[str, int], np.ndarray] | None = None,
                     stop_after_shards: int | None = None, extra: dict | None = None,
                     mirrored: bool = False) -> dict:
    """Writes the feature shards and manifest of `records` into `out_dir`; resumes a killed run.

    Args:
        records: the images with their captions and splits (a reader's output).
        encoder: callable images uint8 (B, S, S, 3) -> annotations (B, L, D) (a `build_encoder` model).
        encoder_info: `EncoderSpec.to_dict()`; needs "image_size"; recorded in the manifest and checked on resume.
        vocabulary: encodes the captions into the `tokens` feature; its checksum goes into the manifest.
        out_dir: str. Created if needed; `vocab.txt` is written there too.
        max_caption_length: int. Words kept per caption (T = max_caption_length + 2 tokens).
        shard_size: int. Images per shard.
        batch_size: int. Images per encoder call.
        num_threads: int. Image-decoding threads.
        progress: bool. Print a progress bar to stderr.
        reader_report: dict or None. The reader's problem counts, copied into the manifest.
        load_image: (path, size) -> uint8 (S, S, 3); default `sat_tf.images.load_and_resize` (raises ImageError).
        stop_after_shards: int or None. Stop after writing this many new shards (tests simulate a killed run).
        extra: dict or None. More top-level manifest entries (the dataset name, vocabulary settings).
        mirrored: bool. Also store the features of each horizontally mirrored photo (manifest `mirrored_views`).

    Returns:
        The manifest (also written to `out_dir/manifest.json`); None-free and JSON-ready.
    """
    os.makedirs(out_dir, exist_ok=True)
    load_image = load_image or load_and_resize
    size = int(encoder_info["image_size"])
    checksum = vocabulary.checksum()
    vocab_path = os.path.join(out_dir, VOCAB)
    if os.path.exists(vocab_path):
        if Vocabulary.load(vocab_path).checksum() != checksum:
            raise ValueError(f"{out_dir} holds features made with another vocabulary ({vocab_path}); use an empty "
                             f"directory or delete it to re-extract")
    else:
        vocabulary.save(vocab_path)
    # A killed run's half-written shard, or a temporary file of `sat_tf.files.write_atomic` (vocabulary, sidecar,
    # manifest: `.<name>.*.tmp`, which "*" does not match).
    for stale in glob.glob(os.path.join(out_dir, "*" + _TMP)) + glob.glob(os.path.join(out_dir, ".*" + _TMP)):
        os.remove(stale)

    plan = plan_shards(records, shard_size)
    todo = [(name, items) for name, items in plan if not _finished(out_dir, name, encoder_info, checksum,
                                                                   max_caption_length, mirrored)]
    bar = Progress(sum(len(items) for _, items in todo), label="extract") if progress and todo else None
    written = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=num_threads) as pool:
        # One decode stream over every shard still to do, so the threads decode the next shard's first batch while
        # the encoder works on this shard's last one (per-shard maps stalled the encoder at every shard start).
        decoded = _decode_ahead(pool, functools.partial(_decode, load_image, size),
                                [record for _, items in todo for record in items], lookahead=2 * batch_size)
        for name, items in todo:
            if stop_after_shards is not None and written >= stop_after_shards:
                if bar:
                    bar.close()
                return {}
            _write_shard(out_dir, name, items, itertools.islice(decoded, len(items)), encoder, encoder_info,
                         vocabulary, max_caption_length, batch_size, bar, mirrored)
            written += 1
    if bar:
        bar.close()
    manifest = _manifest(out_dir, plan, encoder_info, vocabulary, max_caption_length, shard_size, reader_report,
                         mirrored)
    manifest.update(extra or {})
    write_json(os.path.join(out_dir, MANIFEST), manifest)
    return manifest


def _finished(out_dir: str, name: str, encoder_info: dict, checksum: str, max_caption_length: int,
              mirrored: bool) -> bool:
    path = os.path.join(out_dir, name)
    sidecar = path + _SIDECAR
    if not (os.path.exists(path) and os.path.exists(sidecar)):
        return False
    with open(sidecar, encoding="utf-8") as f:
        info = json.load(f)
    if info["encoder"] != encoder_info or info["vocabulary_checksum"] != checksum \
            or info["max_caption_length"] != max_caption_length \
            or bool(info.get("mirrored_views", False)) != mirrored:
        raise ValueError(f"{path} was extracted with another encoder, vocabulary, max_caption_length or mirrored "
                         f"views setting; use an empty directory or delete the old shards to re-extract")
    if os.path.getsize(path) != info["bytes"]:
        os.remove(path)  # damaged after it was written: redo it
        return False
    return True


def _decode(load_image: Callable, size: int, record: CaptionRecord) -> tuple[np.ndarray | None, str | None]:
    """(uint8 (S, S, 3) image, None), or (None, why it was skipped): never raises."""
    try:
        return load_image(record.image_path, size), None
    except ImageError as e:
        return None, e.reason
    except Exception as e:  # noqa: BLE001 - an unexpected decoder failure must not stop the run either
        return None, f"unexpected {type(e).__name__}: {e}"


def _decode_ahead(pool: concurrent.futures.Executor, decode: Callable, records: Sequence[CaptionRecord],
                  lookahead: int) -> Iterator:
    """decode(record) for every record, in order, with at most `lookahead` decodes queued or running (bounded
    memory however many records there are)."""
    pending: collections.deque = collections.deque()
    for record in records:
        pending.append(pool.submit(decode, record))
        if len(pending) >= lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write_shard(out_dir, name, items, decoded, encoder, encoder_info, vocabulary, max_caption_length, batch_size,
                 bar, mirrored=False) -> None:
    """Writes shard `name` of `items`, whose `_decode` results `decoded` yields lazily (same order)."""
    path = os.path.join(out_dir, name)
    tmp = path + _TMP
    skipped: list[dict[str, str]] = []
    lengths: collections.Counter = collections.Counter()
    images = captions = 0

    # Every caption of the shard in one call: per image, the tokenizer's eager ops cost ~8 ms, as much as encoding
    # the image (benchmarks/README.md).
    ends = np.cumsum([len(record.captions) for record in items])  # (n,)
    shard_tokens = np.split(vocabulary.encode([c for r in items for c in r.captions], max_caption_length),
                            ends[:-1])  # n x (N_i, T)

    with tf.io.TFRecordWriter(tmp) as writer:
        batch: list[tuple[CaptionRecord, np.ndarray, np.ndarray]] = []  # (record, image, its tokens)

        def flush():
            nonlocal images, captions
            if not batch:
                return
            pixels = np.stack([image for _, image, _ in batch])  # (B, S, S, 3)
            feats = np.asarray(encoder(pixels))  # (B, L, D)
            # the mirrored photos: columns reversed (B, S, S, 3) -> (B, L, D); None per image without the view
            mirror_feats = np.asarray(encoder(np.ascontiguousarray(pixels[:, :, ::-1]))) if mirrored \
                else [None] * len(batch)
            for (record, _, tokens), features, mirror in zip(batch, feats, mirror_feats):  # tokens (N, T)
                try:
                    example = tfrecord.serialize_example(record.image_id, record.image_path, record.split,
                                                         features, list(record.captions), tokens, mirror)
                except tfrecord.FeatureValueError as e:  # NaN/Inf or float16 overflow: skip the image, not the run
                    skipped.append({"image_id": record.image_id, "path": record.image_path,
                                    "reason": f"{e.reason} from the encoder"})
                    continue
                writer.write(example)
                lengths.update(str(int(n)) for n in (tokens != 0).sum(axis=1))
                images += 1
                captions += len(record.captions)
            if bar:
                bar.update(done=len(batch))
            batch.clear()

        for record, (image, reason), tokens in zip(items, decoded, shard_tokens):
            if image is None:
                skipped.append({"image_id": record.image_id, "path": record.image_path, "reason": reason})
                if bar:
                    bar.update(done=1, skipped=1)
                continue
            batch.append((record, image, tokens))
            if len(batch) == batch_size:
                flush()
        flush()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    result = _ShardResult(file=name, split=items[0].split, images=images, captions=captions,
                          bytes=os.path.getsize(tmp), sha256=sha256_file(tmp), length_histogram=dict(lengths),
                          skipped=skipped, encoder=encoder_info, vocabulary_checksum=vocabulary.checksum(),
                          max_caption_length=max_caption_length, mirrored_views=mirrored)
    write_json(path + _SIDECAR, dataclasses.asdict(result))  # sidecar first: a final-named shard always has one
    os.replace(tmp, path)


def _manifest(out_dir, plan, encoder_info, vocabulary, max_caption_length, shard_size, reader_report,
              mirrored=False) -> dict:
    splits: dict[str, dict] = {}
    skipped: list[dict[str, str]] = []
    for name, _ in plan:
        with open(os.path.join(out_dir, name + _SIDECAR), encoding="utf-8") as f:
            info = json.load(f)
        split = splits.setdefault(info["split"], {"images": 0, "captions": 0, "shards": [],
                                                  "length_histogram": collections.Counter()})
        split["images"] += info["images"]
        split["captions"] += info["captions"]
        split["length_histogram"].update(info["length_histogram"])
        split["shards"].append({k: info[k] for k in ("file", "images", "captions", "bytes", "sha256")})
        skipped.extend(dict(item, split=info["split"]) for item in info["skipped"])
    for split in splits.values():
        split["length_histogram"] = dict(sorted(split["length_histogram"].items(), key=lambda kv: int(kv[0])))
    reasons = collections.Counter(item["reason"].split(" (")[0] for item in skipped)
    return {
        "format": tfrecord.FORMAT,
        "encoder": encoder_info,
        "feature_shape": [int(encoder_info["num_locations"]), int(encoder_info["feature_dim"])],
        "feature_dtype": "float16",
        "mirrored_views": bool(mirrored),
        "vocabulary": {"file": VOCAB, "size": len(vocabulary), "checksum": vocabulary.checksum()},
        "max_caption_length": max_caption_length,
        "shard_size": shard_size,
        "splits": splits,
        "skipped": skipped,
        "skipped_counts": dict(reasons),
        "reader_report": reader_report or {},
    }
