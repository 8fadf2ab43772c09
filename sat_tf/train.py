"""`python -m sat_tf.train`: train a Show, Attend and Tell captioner.

With no arguments it runs the whole loop on the embedded scenes dataset (generated, no download): features ->
TFRecords -> training -> evaluation, prints sample captions and scores, writes attention figures and prints the
next commands. With `--dataset flickr8k --data-dir DIR` (or coco / karpathy) it trains on a real dataset with
the tuned recipe (`--recipe paper` for the paper's training settings; `sat_tf.config.real_dataset_default`).
Rerunning the same command on the same `--workdir` resumes a killed run from its last finished epoch.

Overrides: `--set model.units=1000 --set train.learning_rate=1e-4 --set data.min_count=3`; unknown names are
an error. The thin shell over `sat_tf.training.trainer.train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence

from sat_tf import config as cfg


def parse_overrides(items: Sequence[str], configs: dict) -> dict:
    """Applies `section.field=value` strings to the dataclasses in `configs` (values parsed as the field's type)."""
    out = dict(configs)
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise SystemExit(f"--set {item!r}: expected section.field=value, e.g. model.units=1000")
        key, value = item.split("=", 1)
        section, field = key.split(".", 1)
        if section not in out:
            raise SystemExit(f"--set {item!r}: unknown section {section!r}; use one of {sorted(out)}")
        fields = {f.name: f for f in dataclasses.fields(out[section])}
        if field not in fields:
            raise SystemExit(f"--set {item!r}: {type(out[section]).__name__} has no field {field!r}; known: "
                             f"{sorted(fields)}")
        current = getattr(out[section], field)
        try:
            if isinstance(current, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                parsed = value.lower() in ("true", "1")
            else:
                parsed = type(current)(value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {value!r} is not a {type(current).__name__}") from None
        out[section] = dataclasses.replace(out[section], **{field: parsed})
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sat_tf.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="scenes", choices=cfg.DATASETS)
    p.add_argument("--data-dir", default="", help="dataset root (flickr8k: the folder with Flicker8k_Dataset/)")
    p.add_argument("--coco-annotations", default="", help="coco: captions_train2014.json")
    p.add_argument("--attention", default="soft", choices=cfg.ATTENTION_KINDS)
    p.add_argument("--recipe", default=None, choices=cfg.RECIPES,
                   help="real datasets: 'tuned' (default; the best single-model recipe measured on Flickr8k: "
                        "lambda = 0, weight average, mirrored views, variance-normalised REINFORCE) or 'paper' "
                        "(the paper's settings: lambda = 1, raw weights, no augmentation); --set applies on top")
    p.add_argument("--workdir", default="", help="outputs (default: sat_tf_work/<dataset>_<attention>)")
    p.add_argument("--features-dir", default="", help="feature shards (default: <workdir>/features)")
    p.add_argument("--encoder", default=None, help="encoder name (default efficientnet_lite0)")
    p.add_argument("--layer", default=None, help="encoder feature layer (default: the preset's)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--beam-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--init-from", default=None, metavar="WORKDIR|PRESET",
                   help="start from the best weights of another work dir or of a preset (name or directory): hard "
                        "attention from a soft run, or a preset fine-tuned on your own photos")
    p.add_argument("--strategy", default="default", choices=["default", "mirrored", "multi_worker", "tpu"],
                   help="tf.distribute strategy (docs/distributed.md)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set model.units=1000")
    p.add_argument("--quick", action="store_true",
                   help="a tiny smoke run (few images, small model, 2 epochs): checks an install in a minute")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress bar mode")
    return p


def configs_from_args(args: argparse.Namespace) -> dict:
    """The experiment's configs: the dataset's preset, then the flags, then --set overrides."""
    if args.dataset == "scenes":
        if args.recipe:
            raise SystemExit("--recipe chooses between the real datasets' recipes; the embedded scenes have one "
                             "preset (drop --recipe, or use --set)")
        model, train, data = cfg.scenes_default(args.attention)
    else:
        model, train, data = cfg.real_dataset_default(args.dataset, args.data_dir, args.recipe or "tuned",
                                                      args.attention)
        data = dataclasses.replace(data, coco_annotations=args.coco_annotations)
    model = dataclasses.replace(model, attention=args.attention)
    data = dataclasses.replace(data, data_dir=args.data_dir or data.data_dir, features_dir=args.features_dir)
    if args.encoder:
        data = dataclasses.replace(data, encoder=args.encoder, encoder_layer=args.layer or "")
    elif args.layer:
        data = dataclasses.replace(data, encoder_layer=args.layer)
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
             "beam_size": args.beam_size, "seed": args.seed, "init_from": args.init_from}
    train = dataclasses.replace(train, **{k: v for k, v in flags.items() if v is not None})
    if args.quick:
        model = dataclasses.replace(model, embedding_dim=32, units=64, attention_dim=32)
        train = dataclasses.replace(train, epochs=min(train.epochs, 2), batch_size=16)
        data = dataclasses.replace(data, max_images=48)
    return parse_overrides(args.set, {"model": model, "train": train, "data": data})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configs = configs_from_args(args)
    workdir = args.workdir or os.path.join("sat_tf_work", f"{args.dataset}_{args.attention}"
                                           + ("_quick" if args.quick else ""))
    from sat_tf.training.report import print_report
    from sat_tf.training.trainer import TrainingDiverged, train

    print(f"work dir: {workdir}")
    from sat_tf.training.workdir import record_command

    record_command(workdir, sys.argv[1:] if argv is None else argv)
    try:
        result = train(workdir, configs["model"], configs["train"], configs["data"], strategy=args.strategy,
                       verbose=args.verbose)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
