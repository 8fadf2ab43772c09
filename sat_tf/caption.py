"""`python -m sat_tf.caption --workdir DIR IMAGE|FOLDER|GLOB...`: captions with beam size K, streamed in batches
(memory flat in the number of images) with a progress bar on stderr; `--out FILE.jsonl|.csv|.tsv` writes one record
per image; with `--attention-map DIR` the paper's figure (each word's attention over the image, one panel per word)
for every image. A bad file is an error line (stderr and the --out record), never a stop. A thin shell over
`sat_tf.image_paths`, `sat_tf.inference.ImageCaptioner` and `sat_tf.caption_writer`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence


def _figure_name(path: str, taken: set[str]) -> str:
    """`<image stem>.png`, made unique among the figures of this run (`<stem>_2.png`, ...)."""
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, k = f"{stem}.png", 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}.png"
    taken.add(name)
    return name


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sat_tf.caption", description=__doc__)
    p.add_argument("images", nargs="+",
                   help="image files (JPEG, PNG, GIF, WebP, BMP, TIFF), folders (searched recursively) or glob "
                        "patterns (quote them; ** matches folders)")
    p.add_argument("--workdir", required=True, help="a training work dir")
    p.add_argument("--which", default="best", help="checkpoint: best, latest, or a checkpoint path prefix")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="DIR",
                   help="more work dirs (same vocabulary; any encoder) decoding with --workdir as one model: their "
                        "next-word distributions are averaged at every step")
    p.add_argument("--combine", choices=["probability", "log_probability"], default="probability",
                   help="ensemble: average the probabilities (default) or the log-probabilities (geometric mean)")
    p.add_argument("--hard-inference", choices=["expected", "argmax", "sample"], default=None,
                   help="hard attention: decode with the expected context, the most likely location or a sampled "
                        "one (default: the work dir's model.hard_inference)")
    p.add_argument("--mirror", action="store_true",
                   help="test-time mirroring: also caption each image mirrored left-right and average the next-word "
                        "distributions of both views")
    p.add_argument("--beam-size", type=int, default=None, help="default: the work dir's train.beam_size")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16, help="images read and decoded at a time")
    p.add_argument("--out", default="", metavar="FILE",
                   help="write every image's record (path, caption, log_prob, error) to FILE.jsonl, .csv or .tsv")
    p.add_argument("--attention-map", default="", metavar="DIR",
                   help="write each image's attention figure to DIR/<image name>.png (a single image may name "
                        "the figure file itself: FILE.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = p.parse_args(argv)

    from sat_tf.caption_writer import CaptionWriter
    from sat_tf.image_paths import expand_image_paths
    from sat_tf.inference import ImageCaptioner
    from sat_tf.pipelines.extract import Progress
    from sat_tf.workdir import load_captioner, load_ensemble

    paths, missing = expand_image_paths(args.images)
    single_figure = args.attention_map.lower().endswith(".png")
    if single_figure and len(paths) > 1:
        print(f"error: --attention-map {args.attention_map} names one file but {len(paths)} images were given: "
              f"name a folder", file=sys.stderr)
        return 1
    for item, reason in missing:
        print(f"{item}\terror: {reason}", file=sys.stderr)
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 1
    try:
        writer = CaptionWriter(args.out) if args.out else None
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for item, reason in missing:
        if writer is not None:
            writer.write(item, error=reason)
    try:
        if args.ensemble:
            experiment = load_ensemble([args.workdir, *args.ensemble], args.which,
                                       hard_inference=args.hard_inference, combine=args.combine)
        else:
            experiment = load_captioner(args.workdir, args.which, hard_inference=args.hard_inference)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        if writer is not None:
            writer.close()
        return 1
    captioner = ImageCaptioner(experiment, mirror=args.mirror)
    beam = args.beam_size or experiment.train_config.beam_size
    progress = None if args.no_progress else Progress(len(paths), label="caption")
    failed, figures = len(missing), set()
    try:
        for result in captioner.caption_stream(paths, beam_size=beam, max_length=args.max_length,
                                               batch_size=args.batch_size):
            error = result.error
            if not error and args.attention_map and result.words:
                figure = args.attention_map if single_figure else os.path.join(
                    args.attention_map, _figure_name(result.path, figures))
                try:
                    captioner.save_figure(result, figure)
                except (OSError, ValueError) as e:
                    error = f"attention figure not written: {e}"
            if writer is not None:
                writer.write(result.path, result.caption, result.log_prob, error)
            if error:
                failed += 1
                if progress is not None:
                    sys.stderr.write("\n")
                print(f"{result.path}\terror: {error}", file=sys.stderr)
            elif writer is None:
                print(f"{result.path}\t{result.caption}")
            if progress is not None:
                progress.update(done=1, skipped=int(bool(error)))
    finally:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    captioned = len(paths) - failed + len(missing)
    print(f"{captioned} image(s) captioned, {failed} failed"
          + (f"; records: {args.out}" if writer is not None else "")
          + (f"; attention figures: {args.attention_map}" if args.attention_map else ""),
          file=sys.stderr if writer is None else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
