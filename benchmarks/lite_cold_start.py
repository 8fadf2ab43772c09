"""Captioning on a device without TensorFlow: cold start and memory of `python -m sat_tf.lite caption` (LiteRT) vs
`python -m sat_tf.caption` (TensorFlow), and the warm per-caption latency of every TFLite variant.

    python -m benchmarks.lite_cold_start [--preset NAME|DIR] [--lite-python .venv-lite/bin/python] [--repeats 3]
        [--runs 5] [--photo photo.jpg] [--threads N]

The model: with --preset, that preset (`python -m sat_tf.export --preset P --formats tflite` is run here); without
it, a random-init decoder with the tuned Flickr8k recipe's sizes and decoding (EfficientNet-Lite0 7x7x1280 at 224 px,
E = H = A = 512, a 2,600-word vocabulary, 10 beams, length penalty 1.0) written as a work dir, with <end> suppressed
so every caption runs all 21 steps (a worst case: trained captions end after ~12).

Cold start rows: a new process, from its start to the caption printed, median wall time of --repeats processes and
the largest peak resident memory among them (`benchmarks.cold_start.run_fresh`). The LiteRT rows run with
--lite-python (default: this interpreter; `.venv-lite/bin/python` is an environment with numpy, Pillow and
ai-edge-litert only, as on a device), the TensorFlow row with this interpreter. Latency rows: one process per
variant, `LiteCaptioner.caption([photo])` (file -> caption: Pillow decode, numpy resize, model, search) after a
warm-up call, median of --runs calls, at beam 1 (the one-call `caption` signature) and at the default beam (the
numpy beam search over `encode` / `step`). Without --photo a generated 500 x 375 JPEG is captioned.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks.cold_start import ROOT, run_fresh

VARIANTS = ("int8", "float16", "float32")
VOCAB_SIZE = 2600

LATENCY = """
import json, statistics, sys, time
from sat_tf.lite import LiteCaptioner
model, variant, beam, runs, photo, threads = sys.argv[1:7]
captioner = LiteCaptioner(model, variant, beam_size=int(beam), num_threads=int(threads) or None)
captioner.caption([photo])
times = []
for _ in range(int(runs)):
    start = time.perf_counter()
    result = captioner.caption([photo])[0]
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": 1000 * statistics.median(times), "decoding": captioner.describe(),
                  "file": captioner.model_path, "words": len(result.words)}))
"""


def random_workdir(path: str) -> str:
    """A work dir with a random-init decoder at the tuned Flickr8k recipe's sizes and decoding (module docstring)."""
    import dataclasses

    import keras
    import tensorflow as tf

    from sat_tf.config import real_dataset_default
    from sat_tf.text.vocabulary import END_ID, SPECIAL_TOKENS, Vocabulary
    from sat_tf.training.workdir import build_captioner, checkpoint_for, save_experiment

    model, train, data = real_dataset_default("flickr8k", "")
    model = dataclasses.replace(model, vocab_size=VOCAB_SIZE)
    keras.utils.set_random_seed(0)
    captioner = build_captioner(model, seed=0)
    bias = captioner.cell.output_projection.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[END_ID]], [-1e4]))  # never ends: every caption is 21 steps
    save_experiment(path, model, train, data)
    Vocabulary(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIAL_TOKENS))]).save(
        os.path.join(path, "vocab.txt"))
    checkpoint_for(captioner).save(os.path.join(path, "checkpoints", "ckpt"))
    return path


def _photo(path: str) -> str:
    from benchmarks.inference import sample_jpegs

    with open(path, "wb") as f:
        f.write(sample_jpegs(1)[0])  # 500 x 375, Flickr8k's most common size
    return path


def _export(model_flags: list[str], out: str) -> str:
    subprocess.run([sys.executable, "-m", "sat_tf.export", *model_flags, "--which", "latest", "--formats", "tflite",
                    "--out", out, "--name", "sat_tf"], check=True, cwd=ROOT,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return os.path.join(out, "sat_tf_tflite")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lite_cold_start", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="", help="a preset name or directory (default: a random-init model)")
    parser.add_argument("--lite-python", default=sys.executable,
                        help="the interpreter of the LiteRT rows (an environment without TensorFlow)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per cold-start row")
    parser.add_argument("--runs", type=int, default=5, help="timed captions per latency row")
    parser.add_argument("--threads", type=int, default=0, help="interpreter threads (0: LiteRT's default)")
    parser.add_argument("--photo", default="")
    parser.add_argument("--keep", default="", metavar="DIR",
                        help="write the work dir, the export and the photo into DIR and reuse them when there")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        where = os.path.abspath(args.keep) if args.keep else tmp
        os.makedirs(where, exist_ok=True)
        photo = os.path.join(where, "photo.jpg")
        photo = os.path.abspath(args.photo) if args.photo else (photo if os.path.isfile(photo) else _photo(photo))
        workdir = os.path.join(where, "workdir")
        if not args.preset and not os.path.isdir(workdir):
            random_workdir(workdir)
        model_flags = ["--preset", args.preset] if args.preset else ["--workdir", workdir]
        model = os.path.join(where, "exports", "sat_tf_tflite")
        if not os.path.isfile(os.path.join(model, "config.json")):
            model = _export(model_flags, os.path.join(where, "exports"))
        config = json.load(open(os.path.join(model, "config.json")))
        beam = config["train"]["beam_size"]
        threads = ["--threads", str(args.threads)] if args.threads else []
        lite = ["caption", "--model", model, *threads]
        cold = {
            "python -m sat_tf.lite caption --variant int8 --beam-size 1 photo.jpg":
                (args.lite_python, [*lite, "--variant", "int8", "--beam-size", "1", photo]),
            f"python -m sat_tf.lite caption --variant int8 photo.jpg (beam {beam})":
                (args.lite_python, [*lite, "--variant", "int8", photo]),
            "python -m sat_tf.lite caption --variant float32 --beam-size 1 photo.jpg":
                (args.lite_python, [*lite, "--variant", "float32", "--beam-size", "1", photo]),
            f"python -m sat_tf.caption {' '.join(model_flags[:1])} ... photo.jpg (TensorFlow, beam {beam})":
                (sys.executable, [*model_flags, "--which", "latest", "--no-progress", photo] if not args.preset
                 else [*model_flags, "--no-progress", photo]),
        }
        rows = []
        for label, (python, command_args) in cold.items():
            module = "sat_tf.lite" if "sat_tf.lite" in label else "sat_tf.caption"
            runs = [run_fresh("module", module, command_args, python=python) for _ in range(args.repeats)]
            rows.append((label, statistics.median(r[0] for r in runs), max(r[1] for r in runs)))
        latency = []
        for variant in VARIANTS:
            for beam_size in (1, beam):
                out = subprocess.run([args.lite_python, "-c", LATENCY, model, variant, str(beam_size), str(args.runs),
                                      photo, str(args.threads)], check=True, capture_output=True, text=True, cwd=ROOT)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                latency.append((variant, beam_size, result, os.path.getsize(result["file"])))
    print(f"cold start, {args.repeats} fresh processes per row (median wall, largest peak RSS), {os.cpu_count()} "
          f"CPUs; LiteRT rows: {args.lite_python}\n")
    print("| command | wall s | peak RSS MiB |")
    print("|---|---|---|")
    for label, seconds, rss in rows:
        print(f"| `{label}` | {seconds:.2f} | {rss:.0f} |")
    print(f"\nwarm latency, file -> caption, one image, median of {args.runs}\n")
    print("| variant | model file size | beam | ms / caption | decoding |")
    print("|---|---|---|---|---|")
    for variant, beam_size, result, size in latency:
        print(f"| {variant} | {size / 2 ** 20:.1f} MiB | {beam_size} | {result['ms']:.0f} | "
              f"{result['decoding'].split(': ', 1)[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
