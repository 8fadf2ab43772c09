"""`python -m sat_tf.evaluate --workdir DIR [--split val] [--beam-size K]`, or `--preset NAME|DIR --dataset D
--data-dir DIR --split test` for a preset on any dataset folder: batched beam-search decoding of a split
(never teacher forcing), BLEU-1..4, METEOR, ROUGE-L and CIDEr with the coco-caption code on the paper's 0-100 scale,
the attention-grounding rate on the embedded scenes; writes the COCO-format results JSON, a metrics JSON and an
HTML report (`sat_tf.evaluation.report`). A thin shell over `sat_tf.evaluation.scoring.evaluate`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sat_tf.evaluate", description=__doc__)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--workdir", help="a training work dir")
    model.add_argument("--preset", metavar="NAME|DIR", help="a shipped preset or a preset directory; with "
                       "--dataset and --data-dir")
    p.add_argument("--dataset", choices=["scenes", "flickr8k", "coco", "karpathy", "imagefolder"], default=None,
                   help="score on this dataset folder (with --data-dir): its split's features are extracted with "
                        "the model's encoder and vocabulary into --features-dir or <out>/features_<split>")
    p.add_argument("--data-dir", default=None, help="the dataset folder for --dataset")
    p.add_argument("--coco-annotations", default="", help="--dataset coco: the captions_*.json file")
    p.add_argument("--which", default="best", help="checkpoint: best, latest, or a checkpoint path prefix")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="DIR",
                   help="more work dirs (same vocabulary; any encoder) decoding with --workdir as one model: their "
                        "next-word distributions are averaged at every step")
    p.add_argument("--combine", choices=["probability", "log_probability"], default="probability",
                   help="ensemble: average the probabilities (default) or the log-probabilities (geometric mean)")
    p.add_argument("--hard-inference", choices=["expected", "argmax", "sample"], default=None,
                   help="hard attention: decode with the expected context, the most likely location or a sampled "
                        "one (default: the work dir's model.hard_inference)")
    p.add_argument("--split", default=None, help="default: the work dir's data.eval_split")
    p.add_argument("--beam-size", type=int, default=None, help="default: the work dir's train.beam_size")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--length-penalty", type=float, default=None,
                   help="rank beams by log p / length**alpha (default: the work dir's train.length_penalty)")
    p.add_argument("--min-length", type=int, default=None,
                   help="bar the end token before this many words (default: the work dir's train.min_length)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                   help="n-gram blocking: never emit a word that would repeat an N-gram of the caption, 0 = off "
                        "(default: the work dir's train.no_repeat_ngram_size)")
    p.add_argument("--allow-unk", action="store_true",
                   help="let the decoder emit <unk> (by default it is suppressed: no reference contains it)")
    p.add_argument("--mirror", action="store_true",
                   help="test-time mirroring: also decode every image mirrored left-right and average the "
                        "next-word distributions of both views (features extracted with --mirrored)")
    p.add_argument("--features-dir", nargs="+", default=None, metavar="DIR",
                   help="read the features from DIR instead of the work dir's data.features_dir (for an ensemble "
                        "over several encoders one DIR per encoder, in the order they first appear), e.g. the same "
                        "encoder's features re-extracted with --mirrored; refused unless the encoder matches")
    p.add_argument("--limit", type=int, default=0, help="score only the first N images (0 = all)")
    p.add_argument("--out", default="", help="output dir for the JSON files and the report (default: <workdir>/eval; "
                                             "for a preset sat_tf_eval/<preset>_<dataset>)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the HTML report (report_<split>.html: scores, best/median/worst captions with their "
                        "attention, caption lengths)")
    args = p.parse_args(argv)
    if bool(args.dataset) != bool(args.data_dir) and args.dataset != "scenes":
        p.error("--dataset and --data-dir go together")
    if args.preset and not args.dataset:
        p.error("a preset holds no features: name the dataset to score it on with --dataset and --data-dir")
    if args.dataset and (args.ensemble or (args.features_dir and len(args.features_dir) > 1)):
        p.error("--dataset scores one model on one encoder's features: no --ensemble")

    from sat_tf.evaluation.report import write_report
    from sat_tf.evaluation.scoring import evaluate, prepare_split_features
    from sat_tf.pipelines.manifest import FeatureError, load_manifest
    from sat_tf.pipelines.prepare import check_encoder, scenes_dir
    from sat_tf.presets import load_preset
    from sat_tf.training.workdir import load_captioner, load_ensemble

    try:
        if args.ensemble:
            experiment = load_ensemble([args.workdir, *args.ensemble], args.which,
                                       hard_inference=args.hard_inference, combine=args.combine)
        elif args.preset:
            experiment = load_preset(args.preset, hard_inference=args.hard_inference)
        else:
            experiment = load_captioner(args.workdir, args.which, hard_inference=args.hard_inference)
        data, train = experiment.data_config, experiment.train_config
        name = os.path.basename(os.path.normpath(args.workdir or experiment.workdir))
        split = args.split or data.eval_split
        out = args.out or (os.path.join(args.workdir, "eval") if args.workdir
                           else os.path.join("sat_tf_eval", f"{name}_{args.dataset}"))
        objects = None
        if args.dataset:
            directory = (args.features_dir[0] if args.features_dir
                         else os.path.join(out, f"features_{split}" + (f"_first{args.limit}" if args.limit else "")))
            prepare_split_features(experiment, args.dataset, args.data_dir or "", split, directory,
                                   limit=args.limit, coco_annotations=args.coco_annotations)
            experiment.data_config = data = dataclasses.replace(data, features_dir=directory)
            args.features_dir = None
        if data.dataset == "scenes" and not args.dataset:
            from sat_tf.pipelines.sources.scenes import read_scene_objects

            objects = read_scene_objects(scenes_dir(data, experiment.features_dir))
        features = experiment.input_features_dirs
        if args.features_dir:
            sources = experiment.inputs or [experiment]
            if len(args.features_dir) != len(sources):
                raise ValueError(f"--features-dir got {len(args.features_dir)} directories for a model that reads "
                                 f"{len(sources)} input(s) (one per encoder)")
            for directory, source in zip(args.features_dir, sources):
                check_encoder(directory, source.data_config)
            features = args.features_dir if len(sources) > 1 else args.features_dir[0]
        beam = args.beam_size or train.beam_size
        result = evaluate(experiment.captioner, experiment.vocabulary, features, split=split,
                          beam_size=beam, max_length=args.max_length or train.max_length, limit=args.limit,
                          length_penalty=train.length_penalty if args.length_penalty is None else args.length_penalty,
                          min_length=train.min_length if args.min_length is None else args.min_length,
                          no_repeat_ngram_size=(train.no_repeat_ngram_size if args.no_repeat_ngram_size is None
                                                else args.no_repeat_ngram_size),
                          suppress_unk=not args.allow_unk, scene_objects=objects, out_dir=out,
                          mirror=args.mirror)
        report = None
        if not args.no_report:
            grid = tuple(load_manifest(features if isinstance(features, str) else features[0])["encoder"]["grid"])
            report = write_report(os.path.join(out, f"report_{split}.html"), result, grid,
                                  title=f"{name}: {split} split",
                                  checkpoint=experiment.checkpoint_path)
    except (FileNotFoundError, ValueError, FeatureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{experiment.checkpoint_path}: {split} split, {len(result.decoded)} images, beam {beam}"
          f"{', mirrored views averaged' if args.mirror else ''} (coco-caption, 0-100)")
    print(result.scores.format_table())
    if result.grounding is not None:
        print(result.grounding)
    if result.attention_spread() is not None:
        print(result.attention_spread())
    print(f"results: {os.path.join(out, f'captions_{split}.json')}\nmetrics: {os.path.join(out, f'metrics_{split}.json')}")
    if report:
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
