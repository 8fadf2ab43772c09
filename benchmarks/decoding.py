"""Decoding benchmark: batched beam search (B images x K beams per call) vs one image at a time.

    python -m benchmarks.decoding [--images 64] [--beam 3] [--batch 32 64] [--rounds 3] [--attention soft]
        [--no-repeat-ngram-size 3]
    python -m benchmarks.decoding --workdir runs/f8k_soft_mirror --features-dir runs/f8k_top [--images 256]

The model has the Flickr8k shapes (EfficientNet-Lite0 7x7x1280 annotations, E = H = A = 512, V = 2538 words as
Flickr8k with min_count 5) and random weights: decoding cost does not depend on what the weights say, except
through caption lengths, so the random model is forced to decode the full max_length (its end token never wins
against 2,500 others often). With `--workdir` (a trained model) and `--features-dir` (its extracted features,
dev split) the captions have their real lengths, which is where dropping ended images from a batch matters:
each batch size (one image per call too) is then also timed with the whole batch kept to the end ("kept"), as
before that change, and the ratios are to one image per call that way.

Every setting is timed without n-gram blocking and with `--no-repeat-ngram-size` N (0: without only), in the same
rounds; the "vs off" column is the setting's time with blocking over its time without (1.05: 5% slower).

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
    parser.add_argument("--no-repeat-ngram-size", type=int, default=3, metavar="N",
                        help="also time every setting with n-gram blocking of this size (0: only without)")
    parser.add_argument("--workdir", help="decode with this work dir's trained model (best checkpoint)")
    parser.add_argument("--features-dir", help="with --workdir: its features; the first --images dev images")
    args = parser.parse_args(argv)
    if bool(args.workdir) != bool(args.features_dir):
        parser.error("--workdir and --features-dir go together")

    import tensorflow as tf

    from sat_tf.decoding.beam_search import beam_search

    model, annotations, name = _model_and_annotations(args)
    cfg = model.model_config

    def whole_batch(a, n):  # every image kept to the end of the batch's search (no `images=`)
        state, step_fn = model.decode_step_fn(a, args.beam)
        return beam_search(step_fn, state, tf.shape(a)[0], args.beam, args.max_length, cfg.start_id, cfg.end_id,
                           cfg.pad_id, no_repeat_ngram_size=n)

    blocking = sorted({0, args.no_repeat_ngram_size})
    whole_fn = {n: tf.function(lambda a, n=n: whole_batch(a, n), reduce_retracing=True) for n in blocking}
    modes = ("whole", "drop") if args.workdir else ("drop",)
    settings = [(b, mode, n) for b in [1] + [b for b in args.batch if b != 1] for mode in modes for n in blocking]

    def decode(batch: int, mode: str, n: int) -> None:
        for i in range(0, args.images, batch):
            if mode == "drop":
                model.generate(annotations[i:i + batch], beam_size=args.beam, max_length=args.max_length,
                               no_repeat_ngram_size=n)
            else:
                whole_fn[n](tf.constant(annotations[i:i + batch]))

    for setting in settings:  # one untimed pass traces every call shape (the last call may be smaller)
        decode(*setting)
    wall = {s: [] for s in settings}
    cpu = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting in settings:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            decode(*setting)
            wall[setting].append(args.images / (time.perf_counter() - start_wall))
            cpu[setting].append(args.images / (time.process_time() - start_cpu))

    best_wall = {s: max(v) for s, v in wall.items()}
    best_cpu = {s: max(v) for s, v in cpu.items()}
    one = settings[0]
    print(f"\n{cfg.attention} attention, beam {args.beam}, max_length {args.max_length}, {args.images} images, "
          f"{name}, best of {args.rounds} rounds")
    print(f"{'images per call':>16}{'ended images':>14}{'no-repeat n':>13}{'images/s':>12}{'ratio':>8}"
          f"{'images/CPU-s':>15}{'ratio':>8}{'vs off':>9}")
    for setting in settings:
        batch, mode, n = setting
        off = (batch, mode, 0)
        print(f"{batch:>16}{'dropped' if mode == 'drop' else 'kept':>14}{n or 'off':>13}{best_wall[setting]:>12.1f}"
              f"{best_wall[setting] / best_wall[one]:>8.1f}{best_cpu[setting]:>15.1f}"
              f"{best_cpu[setting] / best_cpu[one]:>8.1f}{best_wall[off] / best_wall[setting]:>9.3f}")
    print("ratio: to one image per call" + (" with the whole batch kept (the search before images were dropped)"
                                            if args.workdir else "") + ", both without blocking (goal >= 10); "
          "vs off: wall time with n-gram blocking / without (goal < 1.10)")
    return 0


def _model_and_annotations(args):
    """(captioner, annotations (N, L, D) float32, description) for the benchmark."""
    if args.workdir:
        from sat_tf.pipelines.dataset import evaluation_dataset
        from sat_tf.training.workdir import load_captioner

        model = load_captioner(args.workdir).captioner
        batches = evaluation_dataset(args.features_dir, 64, limit=args.images, verify="none")
        annotations = np.concatenate([b["annotations"].numpy() for b in batches])
        if len(annotations) < args.images:
            raise SystemExit(f"{args.features_dir} has {len(annotations)} dev images, fewer than --images")
        return model, annotations, f"trained model {args.workdir}, dev features"
    from sat_tf.config import ModelConfig
    from sat_tf.models.captioner import Captioner

    model = Captioner.from_model_config(
        ModelConfig(vocab_size=2538, feature_dim=1280, attention=args.attention), seed=0)
    annotations = np.random.default_rng(0).random((args.images, 49, 1280), dtype=np.float32)  # (N, L, D)
    return model, annotations, "Flickr8k-sized model, random weights"


if __name__ == "__main__":
    sys.exit(main())
