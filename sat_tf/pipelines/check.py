"""`python -m sat_tf.pipelines.check`: is a dataset folder ready for feature extraction and training?

    python -m sat_tf.pipelines.check --dataset flickr8k --data-dir data/flickr8k
    python -m sat_tf.pipelines.check --dataset karpathy --data-dir data/coco
    python -m sat_tf.pipelines.check --dataset imagefolder --data-dir data/my_photos

Runs the reader that extraction runs (`sat_tf.pipelines.prepare.read_dataset`: caption and split files parsed,
every image file's existence checked, no image decoded), so it takes seconds where extraction takes minutes to
hours. It prints the images and captions per split and every skipped or repaired item with its file, line (or JSON
path) and reason, and exits with 1 when training could not start: a caption file that cannot be read, no captions
in the training split, or no images in the dev split that training scores after every epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Sequence

from sat_tf.config import DataConfig
from sat_tf.pipelines.sources.record import SPLITS, ReadReport

DATASETS = ("flickr8k", "coco", "karpathy", "imagefolder")
_EVAL_SPLIT_HINTS = {"flickr8k": " (Flickr8k: Flickr8k_text/Flickr_8k.devImages.txt)",
                     "imagefolder": " (imagefolder: a validation/ folder, or at least 2 photos without split folders)"}


@dataclasses.dataclass
class DatasetCheck:
    """What `check_dataset` found.

    Args:
        splits: {split: (images, captions)} of the records the reader kept, in `SPLITS` order.
        report: ReadReport or None. Every skipped or repaired item (None when the dataset could not be read).
        errors: list of str. Why training could not start on this dataset; empty when it could.
    """

    splits: dict[str, tuple[int, int]]
    report: ReadReport | None
    errors: list[str]

    @property
    def ok(self) -> bool:
        """True when training could start."""
        return not self.errors

    def format(self) -> str:
        """The text the command prints: counts per split, every problem, then the verdict."""
        lines = []
        if self.report is not None:
            lines.append(f"{self.report.source}: {self.report.num_records} images, {self.report.num_captions} "
                         f"captions")
            lines.extend(f"  {split}: {images} images, {captions} captions"
                         for split, (images, captions) in self.splits.items())
            skipped = self.report.num_skipped
            lines.append(f"{len(self.report.problems)} problem(s), {skipped} item(s) skipped"
                         + (":" if self.report.problems else ""))
            lines.extend(f"  {problem}" for problem in self.report.problems)
        lines.extend(f"error: {error}" for error in self.errors)
        lines.append("ready for extraction" if self.ok else "not ready: training could not start")
        return "\n".join(lines)


def check_dataset(config: DataConfig) -> DatasetCheck:
    """Reads the dataset `config` names and says whether training could start on it.

    Args:
        config: DataConfig. `dataset`, `data_dir` (and `coco_annotations`), `train_split` and `eval_split` are used.

    Returns:
        A DatasetCheck; reader errors (a missing folder or caption file, JSON of the wrong schema, `--dataset coco`
        for training) become its `errors` instead of being raised.
    """
    if config.dataset not in DATASETS:
        raise ValueError(f"check_dataset reads one of {DATASETS}, got {config.dataset!r}")
    from sat_tf.pipelines.prepare import read_dataset  # imports TensorFlow (the vocabulary's ops)

    try:
        records, report = read_dataset(config)
    except (FileNotFoundError, ValueError) as e:
        return DatasetCheck({}, None, [str(e)])
    splits: dict[str, tuple[int, int]] = {}
    for split in SPLITS:
        kept = [r for r in records if r.split == split]
        if kept:
            splits[split] = (len(kept), sum(len(r.captions) for r in kept))
    errors = []
    if config.train_split not in splits:
        errors.append(f"no captions in the {config.train_split!r} split, the one training learns from")
    if config.eval_split not in splits:
        errors.append(f"no images in the {config.eval_split!r} split, which training scores after every epoch"
                      + _EVAL_SPLIT_HINTS.get(config.dataset, ""))
    return DatasetCheck(splits, report, errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sat_tf.pipelines.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--data-dir", required=True, help="the dataset root (flickr8k: the folder with "
                                                          "Flicker8k_Dataset/ and Flickr8k_text/; imagefolder: the "
                                                          "folder with metadata.jsonl or metadata.csv, or with "
                                                          "train/ validation/ test/ folders)")
    parser.add_argument("--coco-annotations", default="", help="coco: a captions_*.json file")
    args = parser.parse_args(argv)
    result = check_dataset(DataConfig(dataset=args.dataset, data_dir=args.data_dir,
                                      coco_annotations=args.coco_annotations))
    print(result.format())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
