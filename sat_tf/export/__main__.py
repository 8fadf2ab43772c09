"""`python -m sat_tf.export`: export a trained work dir for TF Serving, TFLite and Keras.

    python -m sat_tf.export --workdir runs/flickr8k --out exports [--name sat_tf] [--version 1] [--beam-size K]
        [--formats saved_model,tflite,keras] [--which best|latest] [--tflite-variants float32,float16,int8]
        [--ensemble DIR... [--combine probability|log_probability]] [--mirror]

writes

    <out>/<name>/<version>/          SavedModel (TF Serving model base path: <out>/<name>), assets/vocab.txt,
                                     assets/config.json
    <out>/<name>_tflite/             captioner_*.tflite, decoder_steps_*.tflite, vocab.txt, config.json
    <out>/<name>_keras/              captioner.keras, encoder.keras, vocab.txt, config.json

With --ensemble (more work dirs decoding with --workdir as one model) or --mirror (test-time mirroring) only the
SavedModel is written: TFLite and Keras files hold one Captioner.

The work is done by `export.saved_model`, `export.tflite` and `export.keras_format`; this file parses flags.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMATS = ("saved_model", "tflite", "keras")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sat_tf.export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="trained sat_tf work dir")
    parser.add_argument("--out", required=True, help="export root directory")
    parser.add_argument("--name", default="sat_tf", help="model name (TF Serving MODEL_NAME)")
    parser.add_argument("--version", type=int, default=1, help="SavedModel version subdirectory")
    parser.add_argument("--beam-size", type=int, default=None,
                        help="beam width of the SavedModel, fixed at export (default: the work dir's train.beam_size)")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="rank beams by log p / length**alpha (default: the work dir's train.length_penalty)")
    parser.add_argument("--formats", default="", help=f"comma-separated subset of {FORMATS} (default: all; "
                                                      f"saved_model with --ensemble or --mirror)")
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
    from sat_tf.export.source import load_ensemble_source

    source = load_ensemble_source([args.workdir, *args.ensemble], args.which, encoder_weights=args.encoder_weights,
                                  combine=args.combine, mirror=args.mirror)
    encoders = ", ".join(f"{spec.name}/{spec.layer} {spec.image_size}px" for spec in source.encoder_specs)
    print(f"exporting {source.checkpoint_path} (encoder {encoders}{', mirrored views' if source.mirror else ''})")
    if "saved_model" in args.formats:
        from sat_tf.export.saved_model import export_saved_model

        recipe = source.train_config  # the work dir's decoding, unless the flags say otherwise
        path = export_saved_model(source, args.out, name=args.name, version=args.version,
                                  beam_size=args.beam_size or recipe.beam_size,
                                  length_penalty=(recipe.length_penalty if args.length_penalty is None
                                                  else args.length_penalty),
                                  overwrite=args.overwrite)
        print(f"SavedModel: {path}  (TF Serving model base path {os.path.dirname(os.path.abspath(path))})")
    if "tflite" in args.formats:
        from sat_tf.export.tflite import export_tflite

        export_tflite(source, os.path.join(args.out, f"{args.name}_tflite"), variants=args.tflite_variants)
    if "keras" in args.formats:
        from sat_tf.export.keras_format import export_keras

        paths = export_keras(source, os.path.join(args.out, f"{args.name}_keras"))
        print(f"Keras: {paths['captioner']}, {paths['encoder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
