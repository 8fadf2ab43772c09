"""`python -m sat_tf.export`: export a trained work dir for TF Serving, TFLite and Keras.

    python -m sat_tf.export --workdir runs/flickr8k|--preset NAME|DIR --out exports [--name sat_tf] [--version 1] [--beam-size K]
        [--formats saved_model,tflite,keras] [--which best|latest] [--tflite-variants float32,float16,int8]
        [--ensemble DIR... [--combine probability|log_probability]] [--mirror]

writes

    <out>/<name>/<version>/          SavedModel (TF Serving model base path: <out>/<name>), assets/vocab.txt,
                                     assets/config.json
    <out>/<name>_tflite/             captioner_*.tflite, decoder_steps_*.tflite, vocab.txt, config.json
    <out>/<name>_keras/              captioner.keras, encoder.keras, vocab.txt, config.json

and with `--format preset` (never part of the default set) a preset directory at <out> itself (`sat_tf.presets`:
config.json, model.weights.h5, assets/vocab.txt, metadata.json with the stored model's scores, README.md model card)
that `--preset <out>` and `ImageCaptioner.from_preset(<out>)` load.

With --ensemble (more work dirs decoding with --workdir as one model) or --mirror (test-time mirroring) only the
SavedModel is written: TFLite and Keras files hold one Captioner.

The work is done by `export.saved_model`, `export.tflite` and `export.keras_format`; this file parses flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMATS = ("saved_model", "tflite", "keras")
PRESET = "preset"  # a format of its own: the preset directory is --out itself


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sat_tf.export", description=__doc__.split("\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--workdir", help="trained sat_tf work dir")
    model.add_argument("--preset", metavar="NAME|DIR", help="a shipped preset or a preset directory")
    parser.add_argument("--out", required=True, help="export root directory")
    parser.add_argument("--name", default="sat_tf", help="model name (TF Serving MODEL_NAME)")
    parser.add_argument("--version", type=int, default=1, help="SavedModel version subdirectory")
    parser.add_argument("--beam-size", type=int, default=None,
                        help="beam width of the SavedModel, fixed at export (default: the work dir's train.beam_size)")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="rank beams by log p / length**alpha (default: the work dir's train.length_penalty)")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                        help="n-gram blocking of the SavedModel and the one-call TFLite model, fixed at export: never "
                             "emit a word that would repeat an N-gram of the caption, 0 = off (default: the work "
                             "dir's train.no_repeat_ngram_size)")
    parser.add_argument("--formats", "--format", default="",
                        help=f"comma-separated subset of {FORMATS} (default: all; saved_model with --ensemble or "
                             f"--mirror), or {PRESET!r} alone: write a preset directory at --out")
    parser.add_argument("--weights-dtype", choices=["float16", "float32"], default="float16",
                        help="preset: how the decoder weights are stored")
    parser.add_argument("--training-command", action="append", default=[], metavar="CMD",
                        help="preset: a command that trained the model, recorded in its card (repeatable; default: "
                             "the work dir's recorded train commands)")
    parser.add_argument("--description", default="", help="preset: one line on what the model is")
    parser.add_argument("--features-dir", default=None,
                        help="preset: features to score the stored model on (default: the work dir's)")
    parser.add_argument("--split", default=None, help="preset: split scored (default: the work dir's data.eval_split)")
    parser.add_argument("--no-score", action="store_true", help="preset: do not score the stored model")
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="DIR",
                        help="more work dirs decoding with --workdir as one model (SavedModel only)")
    parser.add_argument("--combine", choices=["probability", "log_probability"], default="probability",
                        help="ensemble: average the probabilities (default) or the log-probabilities")
    parser.add_argument("--mirror", action="store_true",
                        help="test-time mirroring: also decode each image mirrored left-right (SavedModel only)")
    parser.add_argument("--which", default="best", help="checkpoint: best, latest or a checkpoint prefix")
    parser.add_argument("--encoder-weights", default="imagenet",
                        help="encoder weights the features were extracted with: imagenet or a file path")
    parser.add_argument("--tflite-variants", default="float32,float16,int8", help="TFLite variants")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing SavedModel version")
    args = parser.parse_args(argv)
    composite = bool(args.ensemble or args.mirror)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()] or (
        ["saved_model"] if composite else list(FORMATS))
    if PRESET in args.formats:
        if args.formats != [PRESET] or composite:
            parser.error(f"--format {PRESET} writes one preset directory at --out: export other formats, "
                         f"--ensemble or --mirror in another call")
        return args
    unknown = sorted(set(args.formats) - set(FORMATS))
    if unknown:
        parser.error(f"unknown --formats {unknown}; choose from {FORMATS}")
    if composite and args.formats != ["saved_model"]:
        parser.error("--ensemble and --mirror export a SavedModel only (--formats saved_model): TFLite and Keras "
                     "files hold one Captioner")
    args.tflite_variants = [v.strip() for v in args.tflite_variants.split(",") if v.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.formats == [PRESET]:
        return export_preset_main(args)
    from sat_tf.export.source import load_ensemble_source

    if args.preset and args.ensemble:
        print("error: --ensemble decodes several work dirs as one model: give the first with --workdir",
              file=sys.stderr)
        return 1
    source = load_ensemble_source([args.workdir or args.preset, *args.ensemble], args.which, encoder_weights=args.encoder_weights,
                                  combine=args.combine, mirror=args.mirror)
    encoders = ", ".join(f"{spec.name}/{spec.layer} {spec.image_size}px" for spec in source.encoder_specs)
    print(f"exporting {source.checkpoint_path} (encoder {encoders}{', mirrored views' if source.mirror else ''})")
    blocking = (source.train_config.no_repeat_ngram_size if args.no_repeat_ngram_size is None
                else args.no_repeat_ngram_size)
    if blocking < 0:
        print(f"error: --no-repeat-ngram-size must be >= 0 (0 = off), got {blocking}", file=sys.stderr)
        return 1
    if "saved_model" in args.formats:
        from sat_tf.export.saved_model import export_saved_model

        recipe = source.train_config  # the work dir's decoding, unless the flags say otherwise
        path = export_saved_model(source, args.out, name=args.name, version=args.version,
                                  beam_size=args.beam_size or recipe.beam_size,
                                  length_penalty=(recipe.length_penalty if args.length_penalty is None
                                                  else args.length_penalty),
                                  no_repeat_ngram_size=blocking,
                                  overwrite=args.overwrite)
        print(f"SavedModel: {path}  (TF Serving model base path {os.path.dirname(os.path.abspath(path))})")
    if "tflite" in args.formats:
        from sat_tf.export.tflite import export_tflite

        export_tflite(source, os.path.join(args.out, f"{args.name}_tflite"), variants=args.tflite_variants,
                      no_repeat_ngram_size=blocking)
    if "keras" in args.formats:
        from sat_tf.export.keras_format import export_keras

        paths = export_keras(source, os.path.join(args.out, f"{args.name}_keras"))
        print(f"Keras: {paths['captioner']}, {paths['encoder']}")
    return 0


def export_preset_main(args) -> int:
    """`--format preset`: the work dir (or preset) as a preset directory at --out, scored as stored."""
    from sat_tf.export.preset import export_preset
    from sat_tf.presets import load_model
    from sat_tf.training.workdir import recorded_commands

    try:
        experiment = load_model(args.workdir or args.preset, args.which)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    decoding = {"beam_size": args.beam_size, "length_penalty": args.length_penalty,
                "no_repeat_ngram_size": args.no_repeat_ngram_size}  # the flags fix the preset's decoding settings
    experiment.train_config = dataclasses.replace(experiment.train_config,
                                                  **{k: v for k, v in decoding.items() if v is not None})
    commands = args.training_command or (recorded_commands(args.workdir) if args.workdir else [])
    path = export_preset(experiment, args.out, features_dir=args.features_dir, split=args.split,
                         weights_dtype=args.weights_dtype, commands=commands, description=args.description,
                         score=not args.no_score)
    print(f"preset: {path}  (load it with --preset {path} or ImageCaptioner.from_preset({path!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
