"""Tuning decoding on the dev split: every (length_penalty, min_length, no_repeat_ngram_size) setting scored the
paper's way.

    python -m benchmarks.length_sweep --workdir runs/f8k_default --split val --beam-size 3 10 \\
        --length-penalty 0 0.3 0.6 1.0 --min-length 0 8 --out runs/length_sweep.json
    python -m benchmarks.length_sweep --workdir runs/f8k_default --beam-size 10 --length-penalty 1.0 \\
        --no-repeat-ngram-size 0 2 3 4 --out runs/ngram_sweep.json

Beam search with no length normalisation favours short captions, and BLEU's brevity penalty and METEOR's recall
weighting both punish them; and captions that loop ("a man in a red shirt is wearing a red shirt") repeat n-grams.
This decodes the split with the work dir's best model once per beam size, minimum length and n-gram blocking size,
keeping all K final beams, and picks each image's caption for every length penalty from those beams: the penalty
only ranks the final beams (`beam_search`: pruning uses the plain sums, and the minimum length and the blocking act
during the search), so this is exactly what
`python -m sat_tf.evaluate --length-penalty A --min-length M --no-repeat-ngram-size N` decodes, at a fraction of the
cost. It prints one row per setting: BLEU-1..4, METEOR, ROUGE-L, CIDEr (coco-caption, 0-100), BLEU's length ratio
(candidate tokens / closest-reference tokens), the mean caption length in words and the share of captions repeating
a trigram and a bigram (`sat_tf.metrics.repetition`; the references' shares are printed once at the end). Tune on
the dev split only; the test split is for the final number of the chosen setting.

Shapes: B images per batch, K beams, S max length.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from sat_tf.decoding.ranking import ranking_scores
from sat_tf.metrics.repetition import REPORTED_SIZES, repeat_rate

COLUMNS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def format_row(beam_size: int, length_penalty: float, min_length: int, summary: dict) -> str:
    """One markdown table row of a setting's metrics summary (`Evaluation.summary()`, with `repeat_rate`)."""
    scores = summary["scores"]["scores"]
    cells = [f"{scores[k]:.2f}" if k in scores else "n/a" for k in COLUMNS]
    blocking = summary["decoding"].get("no_repeat_ngram_size", 0)
    repeats = [f"{100 * summary['repeat_rate']['generated'][str(n)]:.1f}%" for n in REPORTED_SIZES]
    return (f"| {beam_size} | {length_penalty:g} | {min_length} | {blocking} | " + " | ".join(cells)
            + f" | {summary['scores']['length_ratio']:.3f} | {summary['mean_words']['generated']:.2f} | "
            + " | ".join(repeats) + " |")


def header() -> str:
    names = ["beam_size", "length_penalty", "min_length", "no_repeat_ngram_size", *COLUMNS, "length ratio",
             "mean words", *(f"{n}-gram repeats" for n in REPORTED_SIZES)]
    return "| " + " | ".join(names) + " |\n|" + "---|" * len(names)


def repeat_rates(captions: list[str]) -> dict[str, float]:
    """{"3": share of captions repeating a trigram, "2": ... a bigram} (0..1)."""
    return {str(n): repeat_rate(captions, n) for n in REPORTED_SIZES}


def decode_all_beams(experiment, split: str, beam_size: int, min_length: int, limit: int = 0,
                     batch_size: int = 32, no_repeat_ngram_size: int = 0) -> list[dict]:
    """Per image: {"image_id", "references", "captions" (K str), "log_probs" (K,), "lengths" (K,)}."""
    from sat_tf.pipelines.dataset import evaluation_dataset

    train, vocabulary = experiment.train_config, experiment.vocabulary
    dataset = evaluation_dataset(experiment.features_dir, batch_size, split=split, limit=limit,
                                 vocabulary_checksum=vocabulary.checksum())
    images = []
    for batch in dataset:
        out = experiment.captioner.generate(batch["annotations"], beam_size=beam_size, max_length=train.max_length,
                                            suppress_unk=train.suppress_unk, min_length=min_length,
                                            no_repeat_ngram_size=no_repeat_ngram_size, return_all_beams=True)
        tokens, log_probs, lengths = (out[k].numpy() for k in ("tokens", "log_probs", "lengths"))  # (B, K, S), (B, K)
        if beam_size == 1:  # greedy search: (B, S), (B,)
            tokens, log_probs, lengths = tokens[:, None], log_probs[:, None], lengths[:, None]
        for i, image_id in enumerate(batch["image_id"].numpy()):
            images.append({"image_id": image_id.decode(),
                           "references": [c.decode() for c in batch["captions"][i].numpy() if c],
                           "captions": [vocabulary.decode(t) for t in tokens[i]],
                           "log_probs": log_probs[i], "lengths": lengths[i]})
    return images


def rerank(images: list[dict], length_penalty: float) -> dict[str, str]:
    """Each image's caption under `length_penalty`: the beam with the best log p / length**alpha (the first of
    equals, as beam_search's stable sort)."""
    chosen = {}
    for image in images:
        scores = ranking_scores(image["log_probs"], image["lengths"], length_penalty)  # (K,)
        chosen[image["image_id"]] = image["captions"][int(np.argmax(scores))]
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--which", default="best")
    parser.add_argument("--split", default="val")
    parser.add_argument("--beam-size", type=int, nargs="+", default=[3])
    parser.add_argument("--length-penalty", type=float, nargs="+", default=[0.0, 0.3, 0.6, 1.0])
    parser.add_argument("--min-length", type=int, nargs="+", default=[0])
    parser.add_argument("--no-repeat-ngram-size", type=int, nargs="+", default=None, metavar="N",
                        help="n-gram blocking sizes to sweep, 0 = off (default: the work dir's "
                             "train.no_repeat_ngram_size)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    parser.add_argument("--out", default="", help="write every setting's metrics summary to this JSON file")
    args = parser.parse_args(argv)

    from sat_tf.files import write_json_atomic
    from sat_tf.metrics.coco_caption import score_captions
    from sat_tf.training.workdir import load_captioner

    experiment = load_captioner(args.workdir, args.which)
    blocking_sizes = args.no_repeat_ngram_size or [experiment.train_config.no_repeat_ngram_size]
    if min(blocking_sizes) < 0:
        parser.error("--no-repeat-ngram-size must be >= 0 (0 = off)")
    print(f"{experiment.checkpoint_path}: {args.split} split (coco-caption, 0-100)")
    print(header(), flush=True)
    results, reference_rates = [], None
    for beam_size, min_length, blocking in itertools.product(args.beam_size, args.min_length, blocking_sizes):
        images = decode_all_beams(experiment, args.split, beam_size, min_length, args.limit,
                                  no_repeat_ngram_size=blocking)
        references = {image["image_id"]: image["references"] for image in images}
        reference_words = np.mean([len(r.split()) for refs in references.values() for r in refs])
        reference_rates = repeat_rates([r for refs in references.values() for r in refs])
        for length_penalty in args.length_penalty:
            candidates = rerank(images, length_penalty)
            summary = {"split": args.split, "images": len(images),
                       "decoding": {"beam_size": beam_size, "length_penalty": length_penalty,
                                    "min_length": min_length, "no_repeat_ngram_size": blocking,
                                    "max_length": experiment.train_config.max_length},
                       "scores": score_captions(references, candidates).as_dict(),
                       "mean_words": {"generated": float(np.mean([len(c.split()) for c in candidates.values()])),
                                      "references": float(reference_words)},
                       "repeat_rate": {"generated": repeat_rates(list(candidates.values())),
                                       "references": reference_rates}}
            results.append(summary)
            print(format_row(beam_size, length_penalty, min_length, summary), flush=True)
            if args.out:
                write_json_atomic(args.out, results, indent=1)
    scores = results[-1]["scores"] if results else {}
    print(f"tokenizer: {scores.get('tokenizer_status')}; METEOR: {scores.get('meteor')}")
    if reference_rates:
        print("references: " + ", ".join(f"{100 * reference_rates[str(n)]:.1f}% repeat a {n}-gram"
                                         for n in REPORTED_SIZES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
