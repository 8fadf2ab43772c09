"""Where do two (or more) captioning models look on the same photos? Typically soft vs hard attention.

    python -m tools.attention_compare --model flickr8k_soft --model flickr8k_hard PHOTO.jpg [PHOTO2.jpg ...] \\
        --out-png compare.png --out-svg compare.svg [--labels soft hard] [--beam-size N ...]

Each `--model` is a preset (a shipped preset's name or a preset directory) or a training work dir
(`sat_tf.presets.load_model`); each decodes every photo with its own decoding settings (its train config: beam size,
length penalty, n-gram blocking) unless `--beam-size`, `--length-penalty` or `--no-repeat-ngram-size` give one value
for all models or one per model. Photos are read as `python -m sat_tf.caption` reads them (files, folders, globs;
a missing or corrupt file is reported by name and skipped). Outputs:

    stdout     per photo and model: the caption, each word's peak cell (row, col) on the encoder grid (argmax of
               its alpha) and the caption's number of distinct peak cells (`caption_spread`)
    --out-png  per photo a title strip with the file name, then per model a header (label: caption) above the
               paper's per-word attention panels (`sat_tf.visualize.attention_figure`), one line of panels per
               model so that the k-th words of all models line up. It contains the photos: keep it to yourself.
    --out-svg  the same layout without the photos (text only, deterministic: the same inputs give the same
               bytes): per photo a title with its file name; per model a row with the label and, per word, an
               h x w grid of <rect> cells (the encoder grid, e.g. 7 x 7) shaded by alpha normalised to the word's
               maximum, the peak cell outlined and the word written under the grid.

Hard attention decoded with the expected context (`model.hard_inference="expected"`, the presets' setting) is drawn
from its alpha like soft attention; decoded with "argmax" or "sample" it attended one cell per word, and the PNG
lights that cell (as `caption --attention-map` does). Peaks are the argmax of alpha in every case.

Exit status: 0 when every photo was compared and every output written, 1 otherwise.

Shapes: W words of a caption, L = h * w locations on the (h, w) encoder grid, P panel side in pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# PNG layout (pixels)
TITLE_HEIGHT = 28    # the photo's file name above its block
HEADER_HEIGHT = 24   # "label: caption" above each model's panels
BLOCK_GAP = 16       # white space below each photo's block
PNG_FONT_SIZE = 14
# SVG layout (pixels)
SVG_MARGIN = 8
SVG_TITLE_HEIGHT = 24   # the photo's file name
SVG_CELL = 6            # side of one grid cell
SVG_WORD_GAP = 10       # space between two words' slots
SVG_WORD_HEIGHT = 16    # the word's line under its grid
SVG_ROW_GAP = 8         # space below each model's row
SVG_CHAR_WIDTH = 6      # a 10 px sans-serif character, at most about this wide (for slot and label widths)
SVG_SHADE = "#c2410c"   # cell colour at the word's maximum alpha


@dataclasses.dataclass
class ComparedModel:
    """One model of the comparison: its label, a ready `ImageCaptioner`, and how it decodes."""

    label: str
    captioner: object  # sat_tf.inference.image_captioner.ImageCaptioner
    beam_size: int
    max_length: int | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the encoder grid its alphas live on."""
        return tuple(self.captioner.specs[0].grid)

    @property
    def single_cell(self) -> bool:
        """Whether decoding attended one cell per word (hard attention with "argmax" or "sample")."""
        config = self.captioner.experiment.model_config
        return config.attention == "hard" and config.hard_inference != "expected"


@dataclasses.dataclass
class ModelRow:
    """One model's caption of one photo, with the alpha (W, L) of each word on the (h, w) grid."""

    label: str
    words: list[str]
    alpha: np.ndarray  # (W, L)
    grid: tuple[int, int]
    location: np.ndarray | None = None  # (W,) the attended cell per word, for single-cell hard decoding

    @property
    def caption(self) -> str:
        return " ".join(self.words)

    @property
    def peaks(self) -> list[tuple[int, int]]:
        """Each word's peak cell (row, col): the argmax of its alpha on the grid."""
        return [divmod(int(i), self.grid[1]) for i in np.argmax(self.alpha, axis=1)] if self.words else []

    @property
    def distinct_cells(self) -> int:
        """The number of different peak cells among the caption's words (0 for an empty caption)."""
        from sat_tf.metrics.attention_spread import caption_spread

        return caption_spread(self.alpha, len(self.words))[0] if self.words else 0


@dataclasses.dataclass
class PhotoComparison:
    """One photo's rows, one per model in the order the models were given."""

    path: str
    rows: list[ModelRow]

    @property
    def name(self) -> str:
        """The photo's file name (no folders: outputs never carry where the photo lay)."""
        return os.path.basename(self.path)


def load_models(sources: Sequence[str], labels: Sequence[str] | None = None, *,
                beam_sizes: Sequence[int] | None = None, length_penalties: Sequence[float] | None = None,
                no_repeat_ngram_sizes: Sequence[int] | None = None, max_length: int | None = None,
                weights: str | None = "imagenet") -> list[ComparedModel]:
    """Loads each source (preset name or directory, or work dir) with its decoding settings.

    Args:
        sources: the models. A preset's name, a preset directory or a training work dir each.
        labels: one per source (default: each source's last path component).
        beam_sizes, length_penalties, no_repeat_ngram_sizes: None or empty (each model's own train config), one
            value for all models, or one per model.
        max_length: the longest caption (default: each model's train config).
        weights: the encoder's weights ("imagenet"; None only for tests with random features).

    Raises:
        FileNotFoundError: a source that is neither a preset nor a work dir (the message lists the presets).
        ValueError: labels or per-model values whose count matches neither 1 nor the number of models.
    """
    from sat_tf.inference.image_captioner import ImageCaptioner
    from sat_tf.presets import find_preset, list_presets, load_model

    for source in sources:  # before any model is loaded: a typo in the last name fails at once
        if find_preset(source) is None and not os.path.isdir(source):
            raise FileNotFoundError(f"{source!r} is neither a work dir nor a preset (shipped presets: "
                                    f"{', '.join(list_presets()) or 'none'})")
    labels = list(labels) if labels else [os.path.basename(os.path.normpath(s)) or s for s in sources]
    if len(labels) != len(sources):
        raise ValueError(f"{len(labels)} labels for {len(sources)} models: give one label per --model")
    beams = _per_model("beam size", beam_sizes, len(sources))
    penalties = _per_model("length penalty", length_penalties, len(sources))
    blocking = _per_model("n-gram blocking size", no_repeat_ngram_sizes, len(sources))
    models = []
    for source, label, beam, penalty, ngram in zip(sources, labels, beams, penalties, blocking):
        experiment = load_model(source)
        overrides = {k: v for k, v in (("length_penalty", penalty), ("no_repeat_ngram_size", ngram)) if v is not None}
        if overrides:  # ImageCaptioner decodes with the experiment's train config
            experiment.train_config = dataclasses.replace(experiment.train_config, **overrides)
        models.append(ComparedModel(label, ImageCaptioner(experiment, weights=weights),
                                    beam or experiment.train_config.beam_size, max_length))
    return models


def _per_model(what: str, values: Sequence | None, count: int) -> list:
    """`values` spread over `count` models: none -> [None] * count, one -> repeated, count -> as given."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise ValueError(f"{len(values)} values of {what} for {count} models: give one for all or one per model")
    return list(values)


def compare(models: Sequence[ComparedModel], paths: Sequence[str], batch_size: int = 16
            ) -> tuple[list[PhotoComparison], list[tuple[str, str]]]:
    """Captions every photo with every model.

    Returns:
        (the comparisons of the photos every model captioned, in order; [(path, why it was skipped)]).
    """
    results = [m.captioner.caption(paths, beam_size=m.beam_size, max_length=m.max_length, batch_size=batch_size)
               for m in models]
    comparisons, skipped = [], []
    for k, path in enumerate(paths):
        per_model = [r[k] for r in results]
        error = next((r.error for r in per_model if r.error), None)
        if error:
            skipped.append((path, error))
            continue
        rows = []
        for model, result in zip(models, per_model):
            h, w = model.grid
            alpha = np.zeros((0, h * w), np.float32) if result.alpha is None else np.asarray(result.alpha)
            location = result.location if model.single_cell else None
            rows.append(ModelRow(model.label, list(result.words), alpha, (h, w), location))
        comparisons.append(PhotoComparison(path, rows))
    return comparisons, skipped


# ----------------------------------------------------------------------------------------------------------
# Text summary
# ----------------------------------------------------------------------------------------------------------

def format_summary(comparisons: Sequence[PhotoComparison]) -> str:
    """Per photo and model: the caption, each word's peak cell and the caption's distinct peak cells."""
    lines = []
    for photo in comparisons:
        lines.append(f"== {photo.name}")
        width = max(len(row.label) for row in photo.rows)
        for row in photo.rows:
            lines.append(f"{row.label:<{width}}  {row.caption or '(empty caption)'}")
            if not row.words:
                continue
            pad = " " * (width + 2)
            lines.append(pad + "  ".join(f"{word} ({r},{c})" for word, (r, c) in zip(row.words, row.peaks)))
            h, w = row.grid
            lines.append(f"{pad}{row.distinct_cells} distinct peak cells over {len(row.words)} words "
                         f"({h}x{w} grid)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# PNG (with the photos)
# ----------------------------------------------------------------------------------------------------------

def comparison_png(comparisons: Sequence[PhotoComparison], images: Sequence[np.ndarray], *, panel_size: int = 128,
                   columns: int = 0) -> Image.Image:
    """The figure with the photos: per photo a title strip, then per model a header and its attention panels.

    Args:
        comparisons: from `compare`.
        images: one (H, W, 3) uint8 RGB photo per comparison (`sat_tf.images.load_image`).
        panel_size: int. P, each panel's side in pixels.
        columns: int. Panels per line; 0 puts a model's whole caption on one line.

    Returns:
        An RGB image: as wide as the widest model's panels; each photo's block TITLE_HEIGHT + the sum over its
        models of HEADER_HEIGHT + that model's `figure_size(W, panel_size, columns)` height + BLOCK_GAP high (an
        empty caption has a header only).
    """
    from sat_tf.visualize import BACKGROUND, TEXT_COLOR, attention_figure

    if len(images) != len(comparisons):
        raise ValueError(f"{len(images)} photos for {len(comparisons)} comparisons")
    pieces: list[tuple[str, str | Image.Image]] = []  # (kind, text or figure); kind: title, header, figure, gap
    for photo, image in zip(comparisons, images):
        pieces.append(("title", photo.name))
        for row in photo.rows:
            pieces.append(("header", f"{row.label}: {row.caption or '(empty caption)'}"))
            if row.words:
                pieces.append(("figure", attention_figure(
                    image, row.words, row.alpha, row.grid,
                    locations=None if row.location is None else list(row.location),
                    panel_size=panel_size, columns=columns or len(row.words))))
        pieces.append(("gap", ""))
    width, height = png_size(comparisons, panel_size=panel_size, columns=columns)
    out = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(out)
    fonts = {"title": _font(PNG_FONT_SIZE + 2), "header": _font(PNG_FONT_SIZE)}
    strips = {"title": TITLE_HEIGHT, "header": HEADER_HEIGHT, "gap": BLOCK_GAP}
    y = 0
    for kind, piece in pieces:
        if kind == "figure":
            out.paste(piece, (0, y))
            y += piece.height
            continue
        if kind in fonts:
            draw.text((6, y + strips[kind] / 2), _fit(draw, fonts[kind], piece, width - 12), fill=TEXT_COLOR,
                      font=fonts[kind], anchor="lm")
        y += strips[kind]
    return out


def png_size(comparisons: Sequence[PhotoComparison], *, panel_size: int = 128, columns: int = 0) -> tuple[int, int]:
    """(width, height) of `comparison_png(comparisons, ...)`, from the layout alone."""
    from sat_tf.visualize import figure_size

    width, height = panel_size, 0
    for photo in comparisons:
        height += TITLE_HEIGHT + BLOCK_GAP
        for row in photo.rows:
            height += HEADER_HEIGHT
            if row.words:
                w, h = figure_size(len(row.words), panel_size, columns or len(row.words))
                width, height = max(width, w), height + h
    return width, height


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # FreeType builds of Pillow >= 10.1
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """`text`, shortened with "..." to fit `width` pixels (Latin-1 only where Pillow has no FreeType)."""
    try:
        draw.textlength(text, font=font)
    except UnicodeEncodeError:
        text = text.encode("latin-1", "replace").decode("latin-1")
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


# ----------------------------------------------------------------------------------------------------------
# SVG (no photos)
# ----------------------------------------------------------------------------------------------------------

def comparison_svg(comparisons: Sequence[PhotoComparison]) -> str:
    """The same layout as the PNG without the photos, as deterministic SVG text (module docstring).

    Structure, for readers and tests: per photo `<g class="photo">` with a `<text class="title">`; per model
    `<g class="model">` with `<text class="label">`; per word `<g class="word" transform="translate(x,y)">` holding
    `<rect class="frame">`, `<g class="grid" transform="scale(SVG_CELL)">` (exactly h * w `<rect>` cells, row-major,
    cell (row, col) at x=col, y=row with width and height 1, `fill-opacity` = alpha / the word's max alpha),
    `<rect class="peak">` outlining the argmax cell in pixels (x = col * SVG_CELL, y = row * SVG_CELL) and
    `<text class="word">`. Pixel coordinates inside a word's group are relative to its grid's top-left corner.
    """
    # the label column holds each row's label and its "N peak cells" line
    label_width = SVG_CHAR_WIDTH * max([len(row.label) for p in comparisons for row in p.rows]
                                       + [len("99 peak cells")]) + SVG_MARGIN
    body, y, width = [], SVG_MARGIN, 2 * SVG_MARGIN + label_width
    for photo in comparisons:
        body.append(f'<g class="photo" data-file={quoteattr(photo.name)}>')
        body.append(f'<text class="title" x="{SVG_MARGIN}" y="{y + SVG_TITLE_HEIGHT - 8}" font-size="13" '
                    f'font-weight="bold">{escape(photo.name)}</text>')
        y += SVG_TITLE_HEIGHT
        for row in photo.rows:
            h, w = row.grid
            body.append(f'<g class="model" data-label={quoteattr(row.label)}>')
            body.append(f'<text class="label" x="{SVG_MARGIN}" y="{y + 12}" font-weight="bold">'
                        f'{escape(row.label)}</text>')
            if row.words:
                body.append(f'<text class="spread" x="{SVG_MARGIN}" y="{y + 26}" fill="#555">'
                            f'{row.distinct_cells} peak cells</text>')
            else:
                body.append(f'<text class="spread" x="{SVG_MARGIN}" y="{y + 26}" fill="#555">empty caption</text>')
            x = SVG_MARGIN + label_width
            for word, alpha, (peak_r, peak_c) in zip(row.words, row.alpha, row.peaks):
                slot = max(w * SVG_CELL, SVG_CHAR_WIDTH * len(word))
                left = x + (slot - w * SVG_CELL) // 2
                body.append(f'<g class="word" transform="translate({left},{y})">')
                body.append(_grid_cells(np.asarray(alpha, np.float64), h, w))
                body.append(f'<rect class="peak" x="{peak_c * SVG_CELL}" y="{peak_r * SVG_CELL}" width="{SVG_CELL}" '
                            f'height="{SVG_CELL}" fill="none" stroke="#000" stroke-width="1.5"/>')
                body.append(f'<text class="word" x="{w * SVG_CELL / 2:g}" y="{h * SVG_CELL + 12}" '
                            f'text-anchor="middle">{escape(word)}</text>')
                body.append("</g>")
                x += slot + SVG_WORD_GAP
            width = max(width, x - SVG_WORD_GAP + SVG_MARGIN)
            y += max(h * SVG_CELL + SVG_WORD_HEIGHT, 32) + SVG_ROW_GAP
            body.append("</g>")
        body.append("</g>")
    height = y + SVG_MARGIN
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">\n'
            f'<rect class="background" width="{width}" height="{height}" fill="#fff"/>')
    return "\n".join([head, *body, "</svg>"]) + "\n"


def _grid_cells(alpha: np.ndarray, h: int, w: int) -> str:
    """A light frame, then `<g class="grid">` scaled to SVG_CELL pixels per unit, with one 1 x 1 `<rect>` per cell at
    (col, row), shaded by alpha / max alpha (opacity to 2 decimals; cells that round to 0 inherit the group's 0)."""
    peak = float(alpha.max()) if alpha.size else 0.0
    shade = alpha / peak if peak > 0 else np.zeros_like(alpha)  # (L,)
    cells = [f'<rect class="frame" width="{w * SVG_CELL}" height="{h * SVG_CELL}" fill="#f6f6f6" stroke="#ccc" '
             f'stroke-width="0.5"/>',
             f'<g class="grid" transform="scale({SVG_CELL})" fill="{SVG_SHADE}" fill-opacity="0">']
    for i in range(h * w):
        r, c = divmod(i, w)
        level = round(float(shade[i]), 2)
        opacity = "" if level <= 0 else f' fill-opacity="{_short(level)}"'
        cells.append(f'<rect x="{c}" y="{r}" width="1" height="1"{opacity}/>')
    cells.append("</g>")
    return "".join(cells)


def _short(value: float) -> str:
    """0.42 -> ".42", 1.0 -> "1": a number in [0, 1] in as few characters as two decimals allow."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text[1:] if text.startswith("0.") else text


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.attention_compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="photos: files, folders (searched recursively) or glob patterns")
    p.add_argument("--model", action="append", required=True, metavar="PRESET|DIR",
                   help="a shipped preset's name, a preset directory or a training work dir; give it once per model")
    p.add_argument("--labels", nargs="+", default=None, help="one label per --model (default: their names)")
    p.add_argument("--beam-size", nargs="+", type=int, default=None, metavar="N",
                   help="one for all models or one per model (default: each model's train.beam_size)")
    p.add_argument("--length-penalty", nargs="+", type=float, default=None, metavar="ALPHA",
                   help="one for all models or one per model (default: each model's train.length_penalty)")
    p.add_argument("--no-repeat-ngram-size", nargs="+", type=int, default=None, metavar="N",
                   help="one for all models or one per model, 0 = off (default: each model's "
                        "train.no_repeat_ngram_size)")
    p.add_argument("--max-length", type=int, default=None, help="default: each model's train.max_length")
    p.add_argument("--out-png", default="", metavar="FILE.png",
                   help="the figure with the photos (for you: the photos' licences may forbid sharing it)")
    p.add_argument("--out-svg", default="", metavar="FILE.svg", help="the same layout without the photos")
    p.add_argument("--panel-size", type=int, default=128, help="PNG: each word panel's side in pixels")
    p.add_argument("--columns", type=int, default=0, help="PNG: panels per line (0: a caption on one line)")
    args = p.parse_args(argv)
    if any(v < 1 for v in args.beam_size or []):
        p.error("--beam-size must be >= 1")
    if any(v < 0 for v in args.no_repeat_ngram_size or []):
        p.error("--no-repeat-ngram-size must be >= 0")
    if args.panel_size < 1 or args.columns < 0:
        p.error("--panel-size must be >= 1 and --columns >= 0")

    try:
        models = load_models(args.model, args.labels, beam_sizes=args.beam_size,
                             length_penalties=args.length_penalty, no_repeat_ngram_sizes=args.no_repeat_ngram_size,
                             max_length=args.max_length)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return run(models, args.images, out_png=args.out_png, out_svg=args.out_svg, panel_size=args.panel_size,
               columns=args.columns)


def run(models: Sequence[ComparedModel], inputs: Sequence[str], *, out_png: str = "", out_svg: str = "",
        panel_size: int = 128, columns: int = 0) -> int:
    """Compares `models` on the photos of `inputs` (files, folders, globs), prints the summary to stdout, bad
    photos to stderr (`path<TAB>error: reason`), writes the outputs named, and returns the exit status (0 when every
    photo was compared and every output written, else 1)."""
    from sat_tf.files import write_atomic
    from sat_tf.images.load import ImageError, load_image
    from sat_tf.images.paths import expand_image_paths

    paths, missing = expand_image_paths(inputs)
    comparisons, skipped = compare(models, paths) if paths else ([], [])
    for path, reason in [*missing, *skipped]:
        print(f"{path}\terror: {reason}", file=sys.stderr)
    failed = bool(missing or skipped)
    if not comparisons:
        print("error: no photo could be captioned by every model: nothing to compare", file=sys.stderr)
        return 1
    print(format_summary(comparisons))
    written = []
    try:
        if out_svg:
            svg = comparison_svg(comparisons)
            written.append(write_atomic(out_svg, lambda f: f.write(svg), fsync=False))
        if out_png:
            images, kept = [], []
            for photo in comparisons:
                try:
                    images.append(load_image(photo.path))
                    kept.append(photo)
                except ImageError as e:  # changed since it was captioned
                    print(f"{photo.path}\terror: {e.reason}", file=sys.stderr)
                    failed = True
            if kept:
                figure = comparison_png(kept, images, panel_size=panel_size, columns=columns)
                written.append(write_atomic(out_png, lambda f: figure.save(f, format="PNG"), binary=True,
                                            fsync=False))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        failed = True
    print(f"{len(comparisons)} photo(s) compared with {len(models)} models, {len(missing) + len(skipped)} skipped"
          + (f"; wrote {', '.join(written)}" if written else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
