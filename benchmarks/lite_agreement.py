"""Does the TensorFlow-free LiteRT runtime caption real photos as the SavedModel does, and what do float16 and int8
cost in caption quality?

    python -m sat_tf.export --preset flickr8k_soft --formats saved_model,tflite --out exports
    python -m benchmarks.lite_agreement --exports exports --data-dir data/flickr8k --images 100

Captions the first `--images` photos of the Flickr8k dev split with the SavedModel's `serving_default` (image bytes,
beam search in TensorFlow) and with `sat_tf.lite.LiteCaptioner` for every exported TFLite variant (numpy beam search
over the `encode` / `step` signatures, the export's decoding settings), then prints how many captions each variant
shares with the SavedModel and its coco-caption scores against the photos' references.
"""

from __future__ import annotations

import argparse
import os
import sys


def agreement(exports: str, data_dir: str, *, name: str = "sat_tf", version: int = 1, split: str = "val",
              images: int = 100, variants=("float32", "float16", "int8")) -> tuple[str, list[dict]]:
    """Captions the first `images` photos of a Flickr8k split with the SavedModel and every TFLite variant.

    Returns:
        (the LiteRT decoding, one dict per decoder: label, captions, equal (count of captions equal to the
        SavedModel's), scores (CaptionScores against the references)).
    """
    import tensorflow as tf

    from sat_tf.export.saved_model import load_saved_model
    from sat_tf.lite import LiteCaptioner
    from sat_tf.metrics.coco_caption import score_captions
    from sat_tf.pipelines.sources import read_flickr8k

    records, _ = read_flickr8k(data_dir)
    records = [r for r in records if r.split == split][:images]
    paths = [r.image_path for r in records]
    references = {i: list(r.captions) for i, r in enumerate(records)}
    serving = load_saved_model(os.path.join(exports, name, str(version))).signatures["serving_default"]
    reference = []
    for start in range(0, len(paths), 16):
        data = [open(p, "rb").read() for p in paths[start:start + 16]]
        reference += [c.decode() for c in serving(image_bytes=tf.constant(data))["captions"].numpy()]
    rows = [("SavedModel (TensorFlow)", reference)]
    decoding = ""
    for variant in variants:
        captioner = LiteCaptioner(os.path.join(exports, f"{name}_tflite"), variant=variant)
        decoding = decoding or captioner.describe()
        rows.append((f"LiteRT {variant}", [r.caption for r in captioner.caption(paths)]))
    return decoding, [{"label": label, "captions": captions,
                       "equal": sum(a == b for a, b in zip(captions, reference)),
                       "scores": score_captions(references, dict(enumerate(captions)))} for label, captions in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lite_agreement", description=__doc__.split("\n")[0])
    parser.add_argument("--exports", required=True, help="the export root (<name>/<version>/ and <name>_tflite/)")
    parser.add_argument("--name", default="sat_tf")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--data-dir", required=True, help="a Flickr8k folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--variants", nargs="+", default=["float32", "float16", "int8"])
    args = parser.parse_args(argv)
    decoding, rows = agreement(args.exports, args.data_dir, name=args.name, version=args.version, split=args.split,
                               images=args.images, variants=args.variants)
    count = len(rows[0]["captions"])
    print(f"{count} Flickr8k {args.split} photos; captions equal to the SavedModel's, and scores against the "
          f"references (coco-caption, 0-100); LiteRT: {decoding}\n")
    print("| decoder | equal to SavedModel | BLEU-1 | BLEU-4 | METEOR | CIDEr |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        scores = row["scores"]
        cells = [f"{scores.scores[k]:.2f}" if k in scores.scores else "n/a"
                 for k in ("BLEU-1", "BLEU-4", "METEOR", "CIDEr")]
        print(f"| {row['label']} | {row['equal']}/{count} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
