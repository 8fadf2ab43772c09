"""Inference speed and size of the exported models: SavedModel (greedy, beam 3) and TFLite
(float32 / float16 / dynamic-range int8).

    python -m benchmarks.inference [--workdir DIR] [--runs 5] [--batch-sizes 1,32] [--threads 2]

What is timed, per batch size B (median of `--runs` calls after a warm-up call; per-image latency = call time / B):

    savedmodel greedy / beam3    `greedy` / `serving_default` signatures of the SavedModel on JPEG bytes: in-graph
                                 decode + resize + encoder + decoding + detokenisation (what TF Serving runs, without
                                 the RPC)
    tflite <variant> greedy      `caption` of captioner_<variant>.tflite on already decoded S x S pixels (what an app
                                 runs; decoding the JPEG is the app's job and not timed)
    tflite float32 beam3 (app)   decoder_steps_float32.tflite with the numpy beam search of `sat_tf.lite.search`

Without --workdir the model is a random-init decoder at the prototype's sizes (E = H = A = 512, V = 10000,
EfficientNet-Lite0 stage5 at 224 px: L = 196, D = 112, captions up to 20 words) with the <end> token suppressed,
so every caption runs all 21 steps: a worst case (a trained Flickr8k model stops after ~12 tokens). With --workdir
the trained model is measured as it is.

`quantization_agreement` is the hook for measuring how often the float16 / int8 models say what the float32 model
says (exact-caption and per-token agreement) on given images, optionally scored against reference captions with a
caption metric such as BLEU; `--agreement-images DIR` runs it on the images of a folder.

Shapes: B batch, S image side, T max tokens, L locations, D depth, V vocabulary.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from sat_tf.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from sat_tf.export.saved_model import export_saved_model, load_saved_model  # noqa: E402
from sat_tf.export.source import ExportSource, load_source, source_from_models  # noqa: E402
from sat_tf.export.tflite import VARIANTS, export_tflite, median_seconds  # noqa: E402
from sat_tf.images.tf_decode import decode_images  # noqa: E402
from sat_tf.lite.runtime import StepDecoder, TFLiteCaptioner  # noqa: E402
from sat_tf.text.vocabulary import END_ID, SPECIAL_TOKENS, Vocabulary  # noqa: E402
from sat_tf.training.workdir import build_captioner  # noqa: E402


def random_source(vocab_size: int = 10000, units: int = 512, seed: int = 0) -> ExportSource:
    """A random-init decoder at the prototype's sizes behind EfficientNet-Lite0 (ImageNet weights, 224 px), with
    <end> suppressed so that every caption is decoded to the full length (the worst case)."""
    keras.utils.set_random_seed(seed)
    model_config = ModelConfig(vocab_size=vocab_size, feature_dim=112, embedding_dim=512, units=units,
                               attention_dim=512, dropout=0.5)
    captioner = build_captioner(model_config, seed=seed)
    bias = captioner.cell.output_projection.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[END_ID]], [-1e4]))
    vocabulary = Vocabulary(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))])
    return source_from_models(captioner, vocabulary, model_config, TrainConfig(max_length=20), DataConfig())


def sample_jpegs(count: int, seed: int = 0, size: tuple[int, int] = (500, 375)) -> list[bytes]:
    """Synthetic photos as JPEG bytes, at Flickr8k's most common size (500 x 375)."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(count):
        coarse = (rng.rand(8, 8, 3) * 255).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC))
        noisy = np.clip(image.astype(np.int16) + rng.randint(-12, 13, image.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def quantization_agreement(tflite_dir: str, pixels: np.ndarray, variants: Sequence[str] = ("float16", "int8"),
                           references: Sequence[Sequence[str]] | None = None,
                           scorer: Callable[[list[str], list[list[str]]], dict] | None = None,
                           vocabulary: Vocabulary | None = None, batch_size: int = 32) -> dict[str, dict]:
    """How often the quantised one-call models agree with float32 on `pixels` (hook for a Flickr8k measurement).

    Args:
        tflite_dir: folder written by `export_tflite` (captioner_<variant>.tflite and vocab.txt).
        pixels: float32 (N, S, S, 3) RGB 0..255, decoded and resized as the app would.
        variants: variants compared with float32.
        references: optional N lists of reference captions; with `scorer`, every variant (float32 included) is
            scored against them.
        scorer: callable(hypotheses list[str], references list[list[str]]) -> dict of metric -> value, e.g. a
            coco-caption BLEU-4 wrapper.
        vocabulary: Vocabulary for detokenising (default: the vocab.txt beside the models).
        batch_size: images per interpreter call.

    Returns:
        variant -> {"exact_caption": fraction of images with identical token ids, "token": fraction of equal
        tokens over float32's real tokens, "captions": list[str], plus the scorer's metrics when given}.
    """
    vocabulary = vocabulary or Vocabulary.load(os.path.join(tflite_dir, "vocab.txt"))

    def run(variant):
        model = TFLiteCaptioner(os.path.join(tflite_dir, f"captioner_{variant}.tflite"))
        outs = [model(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)]
        return np.concatenate([o["tokens"] for o in outs]), np.concatenate([o["lengths"] for o in outs])

    reference_tokens, reference_lengths = run("float32")
    real = np.arange(reference_tokens.shape[1])[None, :] < reference_lengths[:, None]  # (N, T)
    results = {}
    for variant in ("float32", *variants):
        tokens = reference_tokens if variant == "float32" else run(variant)[0]
        captions = vocabulary.decode(tokens)
        result = {"exact_caption": float(np.mean(np.all(tokens == reference_tokens, axis=1))),
                  "token": float(np.sum((tokens == reference_tokens) & real) / max(real.sum(), 1)),
                  "captions": captions}
        if references is not None and scorer is not None:
            result.update(scorer(captions, [list(r) for r in references]))
        results[variant] = result
    return results


def load_folder_pixels(folder: str, size: int, limit: int = 256) -> np.ndarray:
    """Up to `limit` images of a folder (sorted names), decoded in-graph and squashed to S x S: (N, S, S, 3)."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))[:limit]
    data = [open(os.path.join(folder, n), "rb").read() for n in names]
    return decode_images(tf.constant(data), size).numpy()


def _flickr8k_references(flickr8k_dir: str, folder: str):
    """References of the images `load_folder_pixels` reads from `folder` (same order), and a coco-caption scorer."""
    from sat_tf.metrics.coco_caption import score_captions
    from sat_tf.pipelines.sources import read_flickr8k

    records, _ = read_flickr8k(flickr8k_dir)
    by_name = {os.path.basename(r.image_path): list(r.captions) for r in records}
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))[:256]
    references = [by_name[n] for n in names]

    def scorer(hypotheses, refs):
        scores = score_captions({str(i): r for i, r in enumerate(refs)},
                                {str(i): h for i, h in enumerate(hypotheses)}, metrics=("bleu", "meteor", "cider"))
        return {k: float(scores[k]) for k in ("BLEU-4", "METEOR", "CIDEr") if k in scores.keys()}

    return references, scorer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="trained work dir (default: random-init model at the prototype's sizes)")
    parser.add_argument("--which", default="best")
    parser.add_argument("--out", help="export folder to write or reuse (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="reuse the exports already in --out")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="LiteRT interpreter threads")
    parser.add_argument("--agreement-images", help="folder of images for `quantization_agreement`")
    parser.add_argument("--flickr8k-dir", help="with --agreement-images of Flickr8k photos: score every variant's "
                                               "captions against the Flickr8k references (BLEU-4, METEOR, CIDEr)")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    out = args.out or tempfile.mkdtemp(prefix="sat_tf_bench_")
    source = load_source(args.workdir, args.which) if args.workdir else random_source()
    saved_dir = os.path.join(out, "sat_tf", "1")
    tflite_dir = os.path.join(out, "sat_tf_tflite")
    if not (args.reuse and os.path.isdir(saved_dir) and os.path.isdir(tflite_dir)):
        start = time.perf_counter()
        export_saved_model(source, out, beam_size=3, overwrite=True)
        print(f"SavedModel export: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        export_tflite(source, tflite_dir, measure_latency=False, verbose=False)
        print(f"TFLite export (6 files): {time.perf_counter() - start:.1f} s")
    cfg, spec = source.model_config, source.encoder_spec
    print(f"model: E={cfg.embedding_dim} H={cfg.units} A={cfg.attention_dim} V={cfg.vocab_size}, encoder "
          f"{spec.name}/{spec.layer} {spec.image_size}px (L={spec.num_locations}, D={spec.feature_dim}), "
          f"T={source.max_tokens}; {os.cpu_count()} CPU threads, LiteRT threads={args.threads}")

    served = load_saved_model(saved_dir)
    jpegs = sample_jpegs(max(batch_sizes))
    pixels = decode_images(tf.constant(jpegs), source.image_size).numpy()
    rows = []  # (name, size bytes, batch, seconds per call, mean tokens per caption)
    for batch in batch_sizes:
        data = tf.constant(jpegs[:batch])
        for name, key in (("savedmodel greedy", "greedy"), ("savedmodel beam3", "serving_default")):
            fn = served.signatures[key]
            seconds = median_seconds(lambda: fn(image_bytes=data), args.runs)
            lengths = fn(image_bytes=data)["lengths"].numpy()
            rows.append((name, directory_bytes(saved_dir), batch, seconds, float(lengths.mean())))
        for variant in VARIANTS:
            path = os.path.join(tflite_dir, f"captioner_{variant}.tflite")
            model = TFLiteCaptioner(path, num_threads=args.threads)
            seconds = median_seconds(lambda: model(pixels[:batch]), args.runs)
            rows.append((f"tflite {variant} greedy", os.path.getsize(path), batch, seconds,
                         float(model(pixels[:batch])["lengths"].mean())))
        path = os.path.join(tflite_dir, "decoder_steps_float32.tflite")
        decoder = StepDecoder(path, num_threads=args.threads)
        seconds = median_seconds(lambda: decoder.beam_search(pixels[:batch], 3, source.max_tokens), args.runs)
        rows.append(("tflite float32 beam3 (app)", os.path.getsize(path), batch, seconds,
                     float(decoder.beam_search(pixels[:batch], 3, source.max_tokens)["lengths"][:, 0].mean())))

    print("\n| model | size | batch | ms / call | ms / image | images / s | tokens / caption |")
    print("|---|---|---|---|---|---|---|")
    for name, size, batch, seconds, tokens in rows:
        print(f"| {name} | {size / 2 ** 20:.1f} MiB | {batch} | {seconds * 1000:.1f} | {seconds * 1000 / batch:.1f} | "
              f"{batch / seconds:.1f} | {tokens:.1f} |")

    if args.agreement_images:
        references = scorer = None
        if args.flickr8k_dir:
            references, scorer = _flickr8k_references(args.flickr8k_dir, args.agreement_images)
        agreement = quantization_agreement(tflite_dir, load_folder_pixels(args.agreement_images, source.image_size),
                                           references=references, scorer=scorer)
        for variant, result in agreement.items():
            scores = ", ".join(f"{k} {v:.2f}" for k, v in result.items()
                               if k not in ("exact_caption", "token") and isinstance(v, float))
            print(f"{variant}: exact caption {result['exact_caption']:.3f}, token {result['token']:.3f}"
                  + (f"; {scores}" if scores else ""))
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
