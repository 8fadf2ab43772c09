"""What `python -m sat_tf.train` prints at the end: scores, sample captions, attention figures, next commands."""

from __future__ import annotations

import os

from sat_tf.images.load import ImageError, load_image
from sat_tf.pipelines.manifest import load_manifest
from sat_tf.visualize import save_attention_figure


def write_figures(result, out_dir: str, count: int = 3) -> list[str]:
    """The paper's attention figure for the first `count` decoded dev images; returns the PNG paths."""
    final = result.final
    if final is None:
        return []
    from sat_tf.training import workdir as wd

    experiment = wd.load_experiment(result.workdir)
    grid = tuple(load_manifest(experiment.features_dir)["encoder"]["grid"])
    paths = []
    for d in final.decoded[:count]:
        if not d.words:
            continue
        try:
            image = load_image(d.image_path)
        except ImageError:
            continue
        steps = len(d.words)
        path = os.path.join(out_dir, f"attention_{d.image_id}.png")
        save_attention_figure(path, image, d.words, d.alpha[:steps], grid,
                              locations=None if d.location is None else list(d.location[:steps]))
        paths.append(path)
    return paths


def print_report(result, print_fn=print) -> None:
    """Prints the final evaluation, samples, figure paths and the commands to run next."""
    w = result.workdir
    print_fn(f"\ntrained {result.epochs_done} epoch(s) in this run, {result.seconds / 60:.1f} min; best dev "
             f"BLEU-4 {result.best_bleu4:.2f} at epoch {result.best_epoch}"
             + ("  (stopped early)" if result.stopped_early else ""))
    final = result.final
    if final is not None:
        print_fn(f"\ndev split, best model, beam {final.beam_size}, {len(final.decoded)} images "
                 f"(coco-caption, 0-100):")
        print_fn(final.scores.format_table())
        if final.grounding is not None:
            print_fn(str(final.grounding))
        if final.attention_spread() is not None:
            print_fn(str(final.attention_spread()))
        print_fn("\nsamples:")
        for d in final.decoded[:5]:
            print_fn(f"  {d.image_id}: {d.caption}\n      reference: {d.references[0] if d.references else ''}")
        figures = write_figures(result, os.path.join(w, "figures"))
        if figures:
            print_fn("\nattention figures:\n  " + "\n  ".join(figures))
    image = final.decoded[0].image_path if final is not None and final.decoded else "IMAGE.jpg"
    print_fn("\nnext:")
    print_fn(f"  python -m sat_tf.caption --workdir {w} {image} --attention-map caption.png")
    print_fn(f"  python -m sat_tf.evaluate --workdir {w} --split val")
    print_fn(f"  python -m sat_tf.export --workdir {w} --out {os.path.join(w, 'export')}")
    print_fn(f"  tensorboard --logdir {os.path.join(w, 'logs')}")
