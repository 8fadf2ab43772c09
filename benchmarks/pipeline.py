"""Input-pipeline benchmark: extraction vs the encoder alone, tf.data vs training, peak memory vs dataset size.

    python -m benchmarks.pipeline [--images 256] [--batch 64] [--encoder-layer top] [--mirrored] \
        [--flickr8k-dir data/flickr8k]

Prints, all measured in this run on this machine:
1. feature extraction images/sec (Pillow decode in threads + resize + encoder + TFRecord write) next to the
   encoder's own forward pass on already-decoded images at the same batch: goal ratio <= 1.5 (I/O and
   decode overlapped with the encoder);
2. `training_dataset` captions/sec from the shards next to what one training step consumes at the same batch size
   (the Flickr8k model: H = 512, E = A = 512 on the same features): goal ratio >= 5;
3. peak RSS of a process that streams one epoch of 1x and 5x as many shards, both larger than the shuffle buffers
   (2,000 and 10,000 images of 7x7x1280 features): goal equal (memory independent of the dataset size); with
   --mirrored also for shards holding mirrored views streamed with mirror_probability 0.5 (the augmentation's cost).
Images come from the Flickr8k training split of --flickr8k-dir when given, else from the embedded scenes generator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

def _records(count: int, workdir: str, flickr8k_dir: str = ""):
    from sat_tf.pipelines.sources.record import CaptionRecord

    if flickr8k_dir:
        from sat_tf.pipelines.sources import read_flickr8k

        records, _ = read_flickr8k(flickr8k_dir)
        return [r for r in records if r.split == "train"][:count], "flickr8k"
    from sat_tf.pipelines.sources import scenes

    root = scenes.write_scenes(os.path.join(workdir, "scenes"), num_train=count, num_val=1, num_test=1)
    records, _ = scenes.read_scenes(root)
    return [CaptionRecord(r.image_id, r.image_path, r.captions, r.split) for r in records if r.split == "train"], \
        "scenes"


def bench_extraction(records, layer: str, batch: int, workdir: str) -> dict:
    import tensorflow as tf

    from sat_tf.images.load import load_and_resize
    from sat_tf.models.encoder import build_encoder, encoder_spec
    from sat_tf.pipelines.extract import extract_features
    from sat_tf.text.vocabulary import Vocabulary

    spec = encoder_spec("efficientnet_lite0", layer)
    encoder = build_encoder("efficientnet_lite0", layer)
    run = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
    pixels = np.stack([load_and_resize(r.image_path, spec.image_size) for r in records[:batch]])  # (B, S, S, 3)
    run(tf.constant(pixels)).numpy()  # warm-up
    start = time.perf_counter()
    reps = max(1, len(records) // batch)
    for _ in range(reps):
        run(tf.constant(pixels)).numpy()
    encoder_rate = reps * batch / (time.perf_counter() - start)
    vocab = Vocabulary.build([c for r in records for c in r.captions], min_count=1)
    out = os.path.join(workdir, "features")
    start = time.perf_counter()
    extract_features(records, lambda x: run(tf.constant(x)).numpy(), spec.to_dict(), vocab, out, batch_size=batch,
                     shard_size=64, progress=False)
    extract_rate = len(records) / (time.perf_counter() - start)
    return {"encoder": encoder_rate, "extract": extract_rate, "features": out, "feature_shape": spec.feature_shape,
            "vocab_size": len(vocab)}


def bench_dataset_vs_training(features: str, feature_shape, vocab_size: int, batch: int, steps: int = 30) -> dict:
    import keras
    import tensorflow as tf

    from sat_tf.config import ModelConfig
    from sat_tf.models.captioner import Captioner
    from sat_tf.pipelines.dataset import training_dataset

    ds = training_dataset(features, batch, num_epochs=1000)
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    captions = 0
    for _ in range(steps * 4):
        captions += int(next(it)["tokens"].shape[0])
    data_rate = captions / (time.perf_counter() - start)
    model = Captioner.from_model_config(ModelConfig(vocab_size=vocab_size, feature_dim=feature_shape[1]), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(4e-4))
    batches = [next(it) for _ in range(steps)]
    step = tf.function(model.train_step, reduce_retracing=True)
    for b in batches[:3]:
        step(b)  # traces
    start = time.perf_counter()
    captions = 0
    for b in batches:
        step(b)
        captions += int(b["tokens"].shape[0])
    train_rate = captions / (time.perf_counter() - start)
    return {"data": data_rate, "train": train_rate}


_MEMORY_CHILD = """
import resource, sys
from sat_tf.pipelines.dataset import training_dataset
n = 0
for batch in training_dataset(sys.argv[1], 64, verify="size", mirror_probability=float(sys.argv[2])):
    n += int(batch["tokens"].shape[0])
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_memory(workdir: str, base_images: int = 2000, factor: int = 5, mirrored: bool = False) -> dict:
    """Peak RSS streaming synthetic shards (7x7x1280 float16 features) of base_images and factor x base_images;
    `mirrored`: shards with mirrored views, streamed with mirror_probability 0.5."""
    from sat_tf.pipelines.extract import extract_features
    from sat_tf.pipelines.sources.record import CaptionRecord
    from sat_tf.text.vocabulary import Vocabulary
    from PIL import Image

    image = os.path.join(workdir, "one.png")
    Image.new("RGB", (8, 8), (10, 20, 30)).save(image)
    info = {"name": "synthetic", "layer": "random", "image_size": 8, "grid": [7, 7], "feature_dim": 1280,
            "num_locations": 49}
    rng = np.random.default_rng(0)
    noise = rng.random((64, 49, 1280), dtype=np.float32)
    captions = ("a dog runs on the grass", "two people walk down a busy street in the rain", "a cat",
                "a man in a red shirt is climbing a rock wall", "children play in the water at the beach")
    vocab = Vocabulary.build(captions, min_count=1)
    out = {}
    for label, count in (("1x", base_images), (f"{factor}x", base_images * factor)):
        records = [CaptionRecord(f"i{i}", image, captions, "train") for i in range(count)]
        directory = os.path.join(workdir, f"mem_{label}{'_mirrored' if mirrored else ''}")
        extract_features(records, lambda x: noise[:len(x)], info, vocab, directory, shard_size=100,
                         progress=False, load_image=lambda path, size: np.zeros((8, 8, 3), np.uint8),
                         mirrored=mirrored)
        child = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, directory, "0.5" if mirrored else "0"],
                               capture_output=True, text=True, check=True)
        n, rss_kb = child.stdout.split()[-2:]
        out[label] = {"images": count, "captions": int(n), "peak_rss_mb": int(rss_kb) / 1024}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--encoder-layer", default="top")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--mirrored", action="store_true",
                        help="also measure peak memory with mirrored views (mirror_probability 0.5)")
    parser.add_argument("--flickr8k-dir", default="", help="Flickr8k root to take the photos from (default: the "
                                                            "embedded scenes)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        records, source = _records(args.images, workdir, args.flickr8k_dir)
        ex = bench_extraction(records, args.encoder_layer, 32, workdir)
        dt = bench_dataset_vs_training(ex["features"], ex["feature_shape"], ex["vocab_size"], args.batch)
        print(f"\nsource: {source}, {len(records)} images, EfficientNet-Lite0/{args.encoder_layer} "
              f"{tuple(ex['feature_shape'])}, CPU threads: {os.cpu_count()}")
        print(f"{'measure':<52}{'rate':>12}{'ratio':>10}  goal")
        print(f"{'encoder forward only (batch 32), images/s':<52}{ex['encoder']:>12.1f}")
        print(f"{'full extraction (decode+resize+encode+write), images/s':<52}{ex['extract']:>12.1f}"
              f"{ex['encoder'] / ex['extract']:>10.2f}  encoder/extract <= 1.5")
        print(f"{'training step consumes (B=%d), captions/s' % args.batch:<52}{dt['train']:>12.1f}")
        print(f"{'tf.data from shards (B=%d), captions/s' % args.batch:<52}{dt['data']:>12.1f}"
              f"{dt['data'] / dt['train']:>10.1f}  data/train >= 5")
        for mirrored in ((False, True) if args.mirrored else (False,)) if not args.skip_memory else ():
            mem = bench_memory(workdir, mirrored=mirrored)
            kind = "mirrored " if mirrored else ""
            for label, m in mem.items():
                print(f"{'peak RSS streaming %s %sshards (%d images), MB' % (label, kind, m['images']):<52}"
                      f"{m['peak_rss_mb']:>12.0f}")
            labels = list(mem)
            print(f"{'peak RSS ratio %s / %s' % (labels[1], labels[0]):<52}"
                  f"{mem[labels[1]]['peak_rss_mb'] / mem[labels[0]]['peak_rss_mb']:>22.2f}  ~1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
