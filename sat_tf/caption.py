"""`python -m sat_tf.caption [--preset NAME|DIR | --workdir DIR] IMAGE|FOLDER|GLOB...`: captions with the model's
decoding (a shipped preset, flickr8k_soft, when no model is named; `--list-presets` lists them with their scores), streamed in batches
(memory flat in the number of images) with a progress bar on stderr; `--out FILE.jsonl|.csv|.tsv` writes one record
per image; with `--attention-map DIR` the paper's figure (each word's attention over the image, one panel per word)
for every image. A bad file is an error line (stderr and the --out record), never a stop. A thin shell over
`sat_tf.images.paths`, `sat_tf.inference.image_captioner.ImageCaptioner` and `sat_tf.inference.caption_writer`."""

from __future__ import annotations

import argparse
import dataclasses
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
    p.add_argument("images", nargs="*",
                   help="image files (JPEG, PNG, GIF, WebP, BMP, TIFF), folders (searched recursively) or glob "
                        "patterns (quote them; ** matches folders)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", default=None, metavar="NAME|DIR",
                       help="a preset shipped with sat_tf (see --list-presets) or a preset directory (default: "
                            "flickr8k_soft when --workdir is not given either)")
    model.add_argument("--workdir", default=None, help="a training work dir")
    p.add_argument("--list-presets", action="store_true", help="print the shipped presets with their scores and exit")
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
    p.add_argument("--length-penalty", type=float, default=None,
                   help="rank beams by log p / length**alpha (default: the model's train.length_penalty)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                   help="n-gram blocking: never emit a word that would repeat an N-gram of the caption, 0 = off "
                        "(default: the work dir's train.no_repeat_ngram_size)")
    p.add_argument("--batch-size", type=int, default=16, help="images read and decoded at a time")
    p.add_argument("--out", default="", metavar="FILE",
                   help="write every image's record (path, caption, log_prob, error) to FILE.jsonl, .csv or .tsv")
    p.add_argument("--attention-map", default="", metavar="DIR",
                   help="write each image's attention figure to DIR/<image name>.png (a single image may name "
                        "the figure file itself: FILE.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = p.parse_args(argv)
    if args.list_presets:
        from sat_tf.presets import describe_presets

        print(describe_presets())
        return 0
    if not args.images:
        p.error("name at least one image, folder or glob (or --list-presets)")
    if args.ensemble and not args.workdir:
        p.error("--ensemble decodes several work dirs as one model: give the first with --workdir")
    if not args.workdir and not args.preset:
        from sat_tf.presets import DEFAULT_PRESET

        args.preset = DEFAULT_PRESET

    from sat_tf.images.paths import expand_image_paths
    from sat_tf.inference.caption_writer import CaptionWriter
    from sat_tf.inference.image_captioner import ImageCaptioner
    from sat_tf.pipelines.extract import Progress
    from sat_tf.presets import load_preset
    from sat_tf.training.workdir import load_captioner, load_ensemble

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
        elif args.preset:
            experiment = load_preset(args.preset, hard_inference=args.hard_inference)
        else:
            experiment = load_captioner(args.workdir, args.which, hard_inference=args.hard_inference)
        if args.length_penalty is not None:
            experiment.train_config = dataclasses.replace(experiment.train_config, length_penalty=args.length_penalty)
        if args.no_repeat_ngram_size is not None:  # ImageCaptioner decodes with the experiment's train config
            experiment.train_config = dataclasses.replace(experiment.train_config,
                                                          no_repeat_ngram_size=args.no_repeat_ngram_size)
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
