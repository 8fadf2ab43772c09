"""What per-row error handling costs the SavedModel's `serving_default` on batches of good images.

    python -m benchmarks.serving_errors [--workdir DIR] [--batch-sizes 1,8,32] [--runs 9] [--beam-size 3]

Two graphs built from the same `serving_functions` (the functions the SavedModel stores), timed call by call in one
run on the same JPEG bytes, in a shuffled order per run (per batch size B, the median of `--runs` calls after a
warm-up call each):

    per-row      `serving_default` as exported: `decode_rows` (header checks; the whole batch decoded as one tf.data
                 element whose errors are ignored), the encoder on the decoded rows, beam search, the outputs
                 scattered back to their rows, an error string per row
    reference    the graph without per-row handling: `decode_images` (a bad image fails the whole call), the encoder,
                 and the same beam search (the `from_features` function)

`overhead` is the median over runs of per-row / reference - 1 (paired calls, so a load change mid-run cancels out).
Two more columns per B: the decoding alone (`decode_rows` vs `decode_images`), and `serving_default` on the same batch
with its first image cut to half its bytes (a truncated JPEG: only a decoder refuses it, so every row is decoded again
as its own tf.data element, the most a batch with a bad image pays; at B = 1 the model then runs on one blank image).

Without --workdir the model is `benchmarks.inference.random_source`: a random-init decoder at the prototype's sizes
(E = H = A = 512, V = 10000, EfficientNet-Lite0 at 224 px) with <end> suppressed, so every caption runs all 21 steps
(the most decoding work per image, so the smallest relative overhead: a trained model stops after ~12 tokens; use
--workdir to measure one).

Shapes: B batch, S image side.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from benchmarks.inference import random_source, sample_jpegs  # noqa: E402
from sat_tf.export.saved_model import INPUT_BYTES, Detokenizer, serving_functions  # noqa: E402
from sat_tf.export.source import ExportSource, load_source, write_vocabulary  # noqa: E402
from sat_tf.images.tf_decode import decode_images, decode_rows  # noqa: E402


def paths_to_time(source: ExportSource, beam_size: int) -> dict:
    """{"per-row": serving_default, "reference": the same graph with the strict decoder,
    "decode per-row": decode_rows, "decode reference": decode_images}, each a traced tf.function over bytes (B,).

    Args:
        source: ExportSource of one captioner (no ensemble, no mirroring).
        beam_size: int. K of both caption graphs.
    """
    source.refuse_composite("the reference graph")
    size = source.image_size
    with tempfile.TemporaryDirectory() as vocab_dir:
        functions = serving_functions(source, Detokenizer(write_vocabulary(vocab_dir, source.vocabulary)), beam_size)
    spec = [tf.TensorSpec([None], tf.string, name=INPUT_BYTES)]

    @tf.function(input_signature=spec)
    def reference(image_bytes):
        pixels = decode_images(image_bytes, size)  # (B, S, S, 3)
        return functions["from_features"](source.encoder(pixels, training=False))

    out = {"per-row": functions["serving_default"], "reference": reference,
           "decode per-row": tf.function(lambda image_bytes: decode_rows(image_bytes, [size])[1:],  # images, errors
                                         input_signature=spec),
           "decode reference": tf.function(lambda image_bytes: decode_images(image_bytes, size), input_signature=spec)}
    for fn in out.values():
        fn.get_concrete_function()
    return out


def paired_seconds(calls: dict, runs: int, seed: int = 0) -> dict[str, list[float]]:
    """Wall seconds of every call in `calls`, `runs` times: the calls of one run back to back, in an order shuffled
    per run (no call always follows the same one), after one warm-up call each.

    Args:
        calls: {name: callable()}.
        runs: int. Calls of each.
        seed: int. Of the shuffles.
    """
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    order, rng = list(calls), random.Random(seed)
    for _ in range(runs):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def overhead(times: dict[str, list[float]], new: str, old: str) -> float:
    """Median over runs of new / old - 1."""
    return statistics.median(a / b for a, b in zip(times[new], times[old])) - 1.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="trained work dir (default: random-init model at the prototype's sizes)")
    parser.add_argument("--which", default="best")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--beam-size", type=int, default=3)
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    source = load_source(args.workdir, args.which) if args.workdir else random_source()
    fns = paths_to_time(source, args.beam_size)
    cfg, spec = source.model_config, source.encoder_spec
    print(f"model: E={cfg.embedding_dim} H={cfg.units} A={cfg.attention_dim} V={cfg.vocab_size}, encoder "
          f"{spec.name}/{spec.layer} {spec.image_size}px, T={source.max_tokens}, beam {args.beam_size}; "
          f"{os.cpu_count()} CPU threads, load average {os.getloadavg()[0]:.1f} at the start")
    jpegs = sample_jpegs(max(batch_sizes))
    print("\n| batch | reference ms / call | per-row ms / call | overhead | decode only: reference ms | per-row ms "
          "| overhead | one truncated image: per-row ms / call |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in batch_sizes:
        good = tf.constant(jpegs[:batch])
        mixed = tf.constant([jpegs[0][:len(jpegs[0]) // 2]] + jpegs[1:batch])  # a truncated JPEG first
        # The per-row graph must give the reference's outputs on good images before its time means anything.
        new, old = fns["per-row"](good), fns["reference"](good)
        assert (new["tokens"].numpy() == old["tokens"].numpy()).all() and not new["error"].numpy().any()
        times = paired_seconds({name: (lambda fn=fns[name]: fn(good)) for name in fns}
                               | {"mixed": lambda: fns["per-row"](mixed)}, args.runs)
        ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
        print(f"| {batch} | {ms['reference']:.1f} | {ms['per-row']:.1f} | "
              f"{100 * overhead(times, 'per-row', 'reference'):+.1f}% | {ms['decode reference']:.1f} | "
              f"{ms['decode per-row']:.1f} | {100 * overhead(times, 'decode per-row', 'decode reference'):+.1f}% | "
              f"{ms['mixed']:.1f} |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
