"""Training throughput of the Captioner's train_step.

Shapes (the PyTorch reference point's): B=64, L=196, D=512, E=H=A=512, V=10000, caption lengths uniform in 8..20
words (+1 end token). Two batchings:
  bucketed: every minibatch holds captions of one length (what sat_tf.pipelines' length buckets give, paper 4.3);
  mixed:    lengths drawn per caption and padded to the batch's longest (no bucketing); useful FLOPs count only
            real tokens, so padding shows up as lost efficiency.
Reports captions/sec (median of several windows after warm-up) and useful GFLOP/s against a dense float32
matmul peak measured in the same run. FLOPs: 2 per multiply-add of every matmul of the forward pass, times 3
for forward + backward (the standard estimate; the annotation projection's backward needs only its weight
gradient, so this slightly over-counts it).

    python -m benchmarks.train_step [--attention soft hard hard_ecb] [--jit both] [--windows 5] [--steps 8]

`hard_ecb` is hard attention with `reinforce_baseline="expected_context"` and variance normalisation: one more
forward pass (no dropout, no gradient) on the minibatches that sample locations.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import matmul_peak_gflops, median_rate, timed  # noqa: E402
from sat_tf.models.captioner import Captioner  # noqa: E402

B, L, D, E, H, A, V = 64, 196, 512, 512, 512, 512, 10000
VARIANTS = {"soft": {"attention": "soft"}, "hard": {"attention": "hard"},
            "hard_ecb": {"attention": "hard", "reinforce_baseline": "expected_context",
                         "advantage_normalization": True}}
MIN_WORDS, MAX_WORDS = 8, 20


def forward_flops(words: np.ndarray) -> float:
    """Forward FLOPs of one minibatch whose captions have `words` words each (steps = words + 1)."""
    per_image = 2 * L * D * A + 2 * 2 * D * H  # W_a a, init MLPs
    per_step = (2 * H * (A + 1 + 4 * H)  # fused h_{t-1} matmul
                + 2 * L * A + 2 * L * D  # scores w^T tanh(.), context sum
                + 2 * D * 4 * H + 2 * E * 4 * H  # W_z z, W_x E y
                + 2 * H * E + 2 * D * E + 2 * E * V)  # deep output
    steps = words + 1
    return float(len(words) * per_image + steps.sum() * per_step)


def make_batch(rng: np.random.RandomState, words: np.ndarray):
    steps = words + 1
    tokens = np.zeros((len(words), steps.max() + 1), "int32")
    for i, n in enumerate(words):
        tokens[i, 0] = 1
        tokens[i, 1:n + 1] = rng.randint(4, V, size=n)
        tokens[i, n + 1] = 2
    annotations = rng.randn(len(words), L, D).astype("float32")
    return {"annotations": tf.constant(annotations), "tokens": tf.constant(tokens)}


def bench(attention: str, jit: bool, windows: int, steps: int, batching: str, seed: int = 0,
          unroll: bool = False, precision: str = "float32") -> dict:
    keras.utils.set_random_seed(seed)
    # bfloat16: Keras "mixed_bfloat16" (bf16 compute, float32 variables; logits, softmax and losses in float32).
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    model = Captioner(vocab_size=V, feature_dim=D, embedding_dim=E, units=H, attention_dim=A, **VARIANTS[attention],
                      dropout=0.5, seed=seed, unroll_steps=MAX_WORDS + 1 if unroll else 0)
    model.compile(optimizer=keras.optimizers.Adam(4e-4))
    model.optimizer.build(model.trainable_variables)
    signature = {"annotations": tf.TensorSpec([None, L, D], tf.float32),
                 "tokens": tf.TensorSpec([None, None], tf.int32)}
    # XLA: one trace per caption length; otherwise one trace for all lengths, as model.fit does.
    step = tf.function(model.train_step, jit_compile=jit, input_signature=None if jit else [signature])
    rng = np.random.RandomState(seed)

    def words_for_batch():
        if batching == "bucketed":
            return np.full(B, rng.randint(MIN_WORDS, MAX_WORDS + 1))
        return rng.randint(MIN_WORDS, MAX_WORDS + 1, size=B)

    # Warm up every length once (XLA compiles per shape), then measure on a fixed pool of batches.
    warm = [make_batch(rng, np.full(B, n)) for n in range(MIN_WORDS, MAX_WORDS + 1)] if jit else []
    pool = [(make_batch(rng, w), w) for w in (words_for_batch() for _ in range(steps * 2))]
    for batch in warm + [p[0] for p in pool[:2]]:
        step(batch)
    flops = []
    cursor = [0]

    def window():
        chosen = [pool[(cursor[0] + i) % len(pool)] for i in range(steps)]
        cursor[0] += steps

        def run():
            for batch, _ in chosen:
                out = step(batch)
            return float(out["loss"])

        _, seconds = timed(run)
        flops.append(sum(3 * forward_flops(w) for _, w in chosen) / seconds / 1e9)
        return steps * B, seconds

    rate, rates = median_rate(window, windows)
    keras.mixed_precision.set_global_policy("float32")
    return {"captions_per_sec": rate, "rates": rates, "useful_gflops": float(np.median(flops))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attention", nargs="+", default=["soft", "hard"], choices=list(VARIANTS))
    parser.add_argument("--jit", choices=["off", "on", "both"], default="off")
    parser.add_argument("--batching", nargs="+", default=["bucketed", "mixed"], choices=["bucketed", "mixed"])
    parser.add_argument("--unroll", choices=["off", "on", "both"], default="both",
                        help="unroll the decoder over static caption lengths")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="minibatches per timed window")
    args = parser.parse_args(argv)
    peak = matmul_peak_gflops()
    if "bfloat16" in args.precision:
        print(f"dense bfloat16 matmul peak (2048^3, best of 10): {matmul_peak_gflops(dtype=tf.bfloat16):.0f} GFLOP/s")
    print(f"dense float32 matmul peak (2048^3, best of 10): {peak:.0f} GFLOP/s; threads: "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}")
    print(f"B={B} L={L} D={D} E={E} H={H} A={A} V={V}, words {MIN_WORDS}..{MAX_WORDS}; reference: PyTorch "
          f"soft attention ~48 captions/s on this machine")
    print(f"{'attention':<9} {'precision':<9} {'xla':<4} {'unroll':<6} {'batching':<9} {'captions/s':>10} {'x ref':>6} {'useful GFLOP/s':>15} "
          f"{'% peak':>7}  windows")
    results = {}
    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    unrolls = {"off": [False], "on": [True], "both": [False, True]}[args.unroll]
    for attention in args.attention:
      for precision in args.precision:
        for jit in jits:
          for unroll in unrolls:
            for batching in args.batching:
                r = bench(attention, jit, args.windows, args.steps, batching, unroll=unroll, precision=precision)
                results[(attention, jit, unroll, batching, precision)] = r
                print(f"{attention:<9} {precision:<9} {'on' if jit else 'off':<4} {'on' if unroll else 'off':<6} {batching:<9} {r['captions_per_sec']:>10.1f} "
                      f"{r['captions_per_sec'] / 48:>6.2f} {r['useful_gflops']:>15.1f} "
                      f"{100 * r['useful_gflops'] / peak:>6.1f}%  "
                      + " ".join(f"{x:.0f}" for x in r["rates"]), flush=True)
    for precision in args.precision:
      for jit in jits:
        for unroll in unrolls:
          for batching in args.batching:
            key = (jit, unroll, batching, precision)
            soft = results.get(("soft",) + key)
            for variant in ("hard", "hard_ecb"):
                hard = results.get((variant,) + key)
                if soft and hard:
                    print(f"{variant}/soft cost ratio ({precision}, xla {'on' if jit else 'off'}, unroll "
                          f"{'on' if unroll else 'off'}, {batching}): "
                          f"{soft['captions_per_sec'] / hard['captions_per_sec']:.2f}")
    if len(args.precision) == 2:
        for (attention, jit, unroll, batching, precision), r in results.items():
            if precision == "bfloat16" and (attention, jit, unroll, batching, "float32") in results:
                f32 = results[(attention, jit, unroll, batching, "float32")]
                print(f"bfloat16/float32 speed-up ({attention}, xla {'on' if jit else 'off'}, unroll "
                      f"{'on' if unroll else 'off'}, {batching}): {r['captions_per_sec'] / f32['captions_per_sec']:.2f}")
    return results


if __name__ == "__main__":
    main()
