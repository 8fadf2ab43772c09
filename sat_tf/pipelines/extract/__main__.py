"""`python -m sat_tf.pipelines.extract`: read a dataset, build the vocabulary, extract features.

    python -m sat_tf.pipelines.extract --dataset flickr8k --data-dir data/flickr8k --out runs/f8k_top --layer top

The work is done by `sat_tf.pipelines.prepare.prepare_features` (which writes the shards with
`sat_tf.pipelines.extract.extract_features`); this file parses flags.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable

from sat_tf.config import DATASETS, DataConfig
from sat_tf.pipelines.manifest import MANIFEST
from sat_tf.pipelines.prepare import prepare_features


def main(argv: Iterable[str] | None = None) -> int:
    """`python -m sat_tf.pipelines.extract`: read a dataset, build the vocabulary, extract features."""
    parser = argparse.ArgumentParser(prog="python -m sat_tf.pipelines.extract", description=main.__doc__)
    parser.add_argument("--dataset", required=True,
                        choices=DATASETS)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--out", required=True, help="features directory (shards, manifest.json, vocab.txt)")
    parser.add_argument("--encoder", default=DataConfig.encoder)
    parser.add_argument("--layer", default="", help="feature layer (default: the encoder's 14x14 layer)")
    parser.add_argument("--image-size", type=int, default=DataConfig.image_size)
    parser.add_argument("--min-count", type=int, default=DataConfig.min_count)
    parser.add_argument("--max-vocab", type=int, default=DataConfig.max_vocab)
    parser.add_argument("--max-caption-length", type=int, default=DataConfig.max_caption_length)
    parser.add_argument("--shard-size", type=int, default=DataConfig.shard_size)
    parser.add_argument("--coco-annotations", default="")
    parser.add_argument("--mirrored", action="store_true",
                        help="also store the features of each horizontally mirrored photo (for training "
                             "augmentation, data.mirror_probability, and `evaluate --mirror`)")
    args = parser.parse_args(argv)
    config = DataConfig(dataset=args.dataset, data_dir=args.data_dir, features_dir=args.out, encoder=args.encoder,
                        encoder_layer=args.layer, image_size=args.image_size, min_count=args.min_count,
                        max_vocab=args.max_vocab, max_caption_length=args.max_caption_length,
                        shard_size=args.shard_size, coco_annotations=args.coco_annotations,
                        mirrored_views=args.mirrored)
    manifest = prepare_features(config, args.out)
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['images']} images, {info['captions']} captions, {len(info['shards'])} shards")
    print(f"skipped: {len(manifest['skipped'])} {manifest['skipped_counts']}")
    print(f"manifest: {os.path.join(args.out, MANIFEST)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
