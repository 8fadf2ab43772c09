"""`python -m sat_tf.lite caption --model DIR IMAGE|FOLDER|GLOB...`: captions with a TFLite export in LiteRT, no
TensorFlow needed (numpy, Pillow and ai-edge-litert).

    python -m sat_tf.lite caption --model exports/sat_tf_tflite [--variant int8|float16|float32] [--beam-size K]
        [--length-penalty A] [--no-repeat-ngram-size N] [--out FILE.jsonl|.csv|.tsv] photo.jpg ...

Prints `path<TAB>caption` per image on stdout (or writes one record per image to --out, as `python -m
sat_tf.caption` does); a bad file is an error line on stderr (and an --out record) and never stops the others; the
exit status is 1 when any image failed. Decoding defaults come from the export's config.json. A thin shell over
`sat_tf.images.paths`, `sat_tf.lite.LiteCaptioner` and `sat_tf.inference.caption_writer`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sat_tf.lite.captioner import VARIANTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sat_tf.lite", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("caption", help="caption image files with a TFLite export",
                            description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+",
                   help="image files (JPEG, PNG, GIF, WebP, BMP, TIFF), folders (searched recursively) or glob "
                        "patterns (quote them; ** matches folders)")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="the TFLite export folder (<out>/<name>_tflite of `python -m sat_tf.export --formats "
                        "tflite`: config.json, vocab.txt, *.tflite)")
    p.add_argument("--variant", choices=VARIANTS, default=None,
                   help="which models to run (default: int8 when exported, else float32, else float16)")
    p.add_argument("--beam-size", type=int, default=None,
                   help="K (default: config.json's train.beam_size); 1 runs the one-call `caption` signature")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="rank beams by log p / length**alpha (default: config.json's train.length_penalty)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                   help="n-gram blocking: never emit a word that would repeat an N-gram of the caption, 0 = off "
                        "(default: the export's, config.json's export.no_repeat_ngram_size)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="most tokens per caption, <end> included (default: config.json's export.max_tokens)")
    p.add_argument("--threads", type=int, default=None, help="interpreter CPU threads (default: LiteRT's)")
    p.add_argument("--batch-size", type=int, default=1, help="images per model call")
    p.add_argument("--out", default="", metavar="FILE",
                   help="write every image's record (path, caption, log_prob, error) to FILE.jsonl, .csv or .tsv")
    return parser


def caption(args: argparse.Namespace) -> int:
    """The `caption` command: returns the exit status (1 when any image failed or the model cannot be used)."""
    from sat_tf.images.paths import expand_image_paths
    from sat_tf.inference.caption_writer import CaptionWriter
    from sat_tf.lite.captioner import LiteCaptioner

    paths, missing = expand_image_paths(args.images)
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 1
    try:
        captioner = LiteCaptioner(args.model, variant=args.variant, beam_size=args.beam_size,
                                  length_penalty=args.length_penalty,
                                  no_repeat_ngram_size=args.no_repeat_ngram_size, max_tokens=args.max_tokens,
                                  num_threads=args.threads)
        writer = CaptionWriter(args.out) if args.out else None
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = 0
    try:
        for item, reason in missing:
            failed += 1
            print(f"{item}\terror: {reason}", file=sys.stderr)
            if writer is not None:
                writer.write(item, error=reason)
        for result in captioner.caption_stream(paths, batch_size=args.batch_size):
            if writer is not None:
                writer.write(result.path, result.caption, result.log_prob, result.error)
            if result.error:
                failed += 1
                print(f"{result.path}\terror: {result.error}", file=sys.stderr)
            elif writer is None:
                print(f"{result.path}\t{result.caption}", flush=True)
    finally:
        if writer is not None:
            writer.close()
    captioned = len(paths) + len(missing) - failed
    print(f"{captioned} image(s) captioned, {failed} failed ({captioner.describe()})"
          + (f"; records: {args.out}" if writer is not None else ""),
          file=sys.stderr if writer is None else sys.stdout)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return caption(args)


if __name__ == "__main__":
    sys.exit(main())
