"""Decoding benchmark: batched beam search (B images x K beams per call) vs one image at a time.

    python -m benchmarks.decoding [--images 64] [--beam 3] [--batch 32 64] [--rounds 3] [--attention soft]

The model has the Flickr8k shapes (EfficientNet-Lite0 7x7x1280 annotations, E = H = A = 512, V = 2538 words as
Flickr8k with min_count 5) and random weights: decoding cost does not depend on what the weights say, except
through caption lengths, so the random model is forced to decode the full max_length (its end token never wins
against 2,500 others often).

Every setting decodes the same `--images` images (one image per call, then `--batch` images per call for each
batch size), in `--rounds` interleaved rounds, and the best round counts: on a shared machine the other
processes only ever slow a round down. Prints a table of images/sec by wall clock, and images per CPU-second of
this process (all its threads; less sensitive to other processes' load), each with its ratio to one image per
call (goal >= 10).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64], help="images per call (one or more)")
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best one counts")
    parser.add_argument("--attention", choices=("soft", "hard"), default="soft")
    args = parser.parse_args(argv)

    from sat_tf.config import ModelConfig
    from sat_tf.models.captioner import Captioner

    model = Captioner.from_model_config(
        ModelConfig(vocab_size=2538, feature_dim=1280, attention=args.attention), seed=0)
    rng = np.random.default_rng(0)
    annotations = rng.random((args.images, 49, 1280), dtype=np.float32)  # (N, L, D)

    def decode(batch: int) -> None:
        for i in range(0, args.images, batch):
            model.generate(annotations[i:i + batch], beam_size=args.beam, max_length=args.max_length)

    sizes = [1] + [b for b in args.batch if b != 1]
    for batch in sizes:  # trace every call shape (the last call may be smaller) before timing
        for size in {min(batch, args.images), args.images % batch or batch}:
            model.generate(annotations[:size], beam_size=args.beam, max_length=args.max_length)
    wall = {b: [] for b in sizes}
    cpu = {b: [] for b in sizes}
    for _ in range(args.rounds):
        for batch in sizes:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            decode(batch)
            wall[batch].append(args.images / (time.perf_counter() - start_wall))
            cpu[batch].append(args.images / (time.process_time() - start_cpu))

    best_wall = {b: max(v) for b, v in wall.items()}
    best_cpu = {b: max(v) for b, v in cpu.items()}
    print(f"\n{args.attention} attention, beam {args.beam}, max_length {args.max_length}, {args.images} images, "
          f"Flickr8k-sized model, best of {args.rounds} rounds")
    print(f"{'images per call':>16}{'images/s':>12}{'ratio':>8}{'images/CPU-s':>15}{'ratio':>8}")
    for batch in sizes:
        print(f"{batch:>16}{best_wall[batch]:>12.1f}{best_wall[batch] / best_wall[1]:>8.1f}"
              f"{best_cpu[batch]:>15.1f}{best_cpu[batch] / best_cpu[1]:>8.1f}")
    print("ratio: to one image per call (goal >= 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
