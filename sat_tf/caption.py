"""`python -m sat_tf.caption --workdir DIR IMAGE...`: captions with beam size K and, with `--attention-map
FILE.png`, the paper's figure (each word's attention over the image, one panel per word). A thin shell over
`sat_tf.inference.ImageCaptioner`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence


def _figure_path(template: str, index: int, count: int) -> str:
    if count == 1:
        return template
    root, ext = os.path.splitext(template)
    return f"{root}_{index}{ext or '.png'}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sat_tf.caption", description=__doc__)
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, GIF, WebP, BMP, TIFF)")
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
    p.add_argument("--attention-map", default="", metavar="FILE.png",
                   help="write the attention figure (FILE_<i>.png for several images)")
    args = p.parse_args(argv)

    from sat_tf.inference import ImageCaptioner
    from sat_tf.workdir import load_captioner, load_ensemble

    try:
        if args.ensemble:
            experiment = load_ensemble([args.workdir, *args.ensemble], args.which,
                                       hard_inference=args.hard_inference, combine=args.combine)
        else:
            experiment = load_captioner(args.workdir, args.which, hard_inference=args.hard_inference)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    captioner = ImageCaptioner(experiment, mirror=args.mirror)
    beam = args.beam_size or experiment.train_config.beam_size
    results = captioner.caption(args.images, beam_size=beam, max_length=args.max_length)
    failed = 0
    for i, result in enumerate(results):
        if result.error:
            failed += 1
            print(f"{result.path}\terror: {result.error}", file=sys.stderr)
            continue
        print(f"{result.path}\t{result.caption}")
        if args.attention_map and result.words:
            path = captioner.save_figure(result, _figure_path(args.attention_map, i, len(results)))
            print(f"  attention figure: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
