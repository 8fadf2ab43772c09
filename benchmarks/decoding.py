"""Decoding benchmark: batched beam search (B images x K beams per call) vs one image at a time.

    python -m benchmarks.decoding [--images 64] [--beam 3] [--batch 32]

The model has the Flickr8k shapes (EfficientNet-Lite0 7x7x1280 annotations, E = H = A = 512, V = 2538 words as
Flickr8k with min_count 5) and random weights: decoding cost does not depend on what the weights say, except
through caption lengths, so the random model is forced to decode the full max_length (its end token never wins
against 2,500 others often). Prints images/sec of both, and the ratio (goal >= 10x).
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
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=20)
    args = parser.parse_args(argv)

    from sat_tf.config import ModelConfig
    from sat_tf.models.captioner import Captioner

    model = Captioner.from_model_config(ModelConfig(vocab_size=2538, feature_dim=1280), seed=0)
    rng = np.random.default_rng(0)
    annotations = rng.random((args.images, 49, 1280), dtype=np.float32)  # (N, L, D)

    def run(batch: int) -> float:
        model.generate(annotations[:batch], beam_size=args.beam, max_length=args.max_length)  # trace this shape
        start = time.perf_counter()
        for i in range(0, args.images, batch):
            model.generate(annotations[i:i + batch], beam_size=args.beam, max_length=args.max_length)
        return args.images / (time.perf_counter() - start)

    one = run(1)
    batched = run(args.batch)
    print(f"\nbeam {args.beam}, max_length {args.max_length}, {args.images} images, Flickr8k-sized model")
    print(f"{'one image per call, images/s':<40}{one:>10.1f}")
    print(f"{'%d images per call, images/s' % args.batch:<40}{batched:>10.1f}")
    print(f"{'ratio (goal >= 10)':<40}{batched / one:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
