"""The evaluation report: one self-contained HTML file beside the metrics JSON, for looking at what a model says,
where it looks and where it fails.

It holds the scores table (coco-caption, 0-100) with the decoding settings, the tokenizer and METEOR that ran,
BLEU's length ratio and the share of captions that repeat a trigram or a bigram, generated vs references
(`sat_tf.metrics.repetition`: what n-gram blocking, `no_repeat_ngram_size`, removes); a gallery of the best, median and worst images by per-image CIDEr, each with the generated
caption, its references and the paper's attention figure (one panel per word, `sat_tf.visualize`; for hard
attention the chosen location of every step); and a histogram of caption lengths, generated vs references, as
inline SVG. Figures are embedded as PNG data URIs: the file needs no network and no other file, and contains no
script.

Shapes: T words of a caption, L attention locations on the encoder's (h, w) grid.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from typing import Sequence

import numpy as np

from sat_tf.files import write_atomic
from sat_tf.images.load import ImageError, load_image
from sat_tf.metrics.repetition import REPORTED_SIZES
from sat_tf.visualize import attention_figure

GALLERY_METRIC = "CIDEr"
PANEL_SIZE = 112       # pixels per attention panel in the report (the figure files use the paper's 224)
PANEL_COLUMNS = 6
HISTOGRAM_MAX_WORDS = 25  # longer captions share the last bin

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; }
table.scores { border-collapse: collapse; }
table.scores td, table.scores th { border: 1px solid #ccc; padding: 3px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.example { border: 1px solid #ddd; padding: 12px; margin: 12px 0; }
.example .caption { font-size: 17px; font-weight: bold; }
.example ul { margin: 4px 0 8px 0; }
.example img { max-width: 100%; display: block; }
.note { color: #a33; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
"""
_GENERATED_COLOR = "#3b6fb6"
_REFERENCE_COLOR = "#e39b3b"


def gallery_selection(per_image: dict, count: int = 3) -> dict[str, list]:
    """Image ids of the `count` best, median and worst images by score: {"best": [...], "median": [...],
    "worst": [...]}, best first within each group; groups never share an image (fewer images: fewer each)."""
    ranked = sorted(per_image, key=lambda i: (-per_image[i], str(i)))  # best first; ties by id
    n = len(ranked)
    best = ranked[:count]
    worst = [i for i in ranked[max(n - count, len(best)):]]
    middle = ranked[len(best):n - len(worst)]
    start = max(0, (len(middle) - count) // 2)
    return {"best": best, "median": middle[start:start + count], "worst": worst}


def length_histogram_svg(generated: Sequence[int], references: Sequence[int], *, max_words: int = HISTOGRAM_MAX_WORDS,
                         width: int = 720, height: int = 260) -> str:
    """Inline SVG: the share of captions with each length in words, generated (blue) vs references (orange)."""
    def shares(lengths):
        counts = np.bincount(np.clip(np.asarray(lengths, dtype=np.int64), 0, max_words), minlength=max_words + 1)
        return counts / max(1, len(lengths))  # (max_words + 1,)

    gen, ref = shares(generated), shares(references)
    top = max(float(gen.max()), float(ref.max()), 1e-9)
    left, bottom, plot_h = 40, 30, height - 50
    slot = (width - left - 10) / (max_words + 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="caption length histogram">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#444"/>']
    for k in range(max_words + 1):
        x = left + k * slot
        for offset, value, color in ((0.1, gen[k], _GENERATED_COLOR), (0.5, ref[k], _REFERENCE_COLOR)):
            h = plot_h * value / top
            parts.append(f'<rect x="{x + offset * slot:.1f}" y="{height - bottom - h:.1f}" width="{0.4 * slot:.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{k} words: {100 * value:.1f}%</title></rect>')
        if k % 5 == 0 or k == max_words:
            label = f"{k}+" if k == max_words else str(k)
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - bottom + 16}" font-size="11" '
                         f'text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{left - 6}" y="{height - bottom - plot_h + 4}" font-size="11" text-anchor="end">'
                 f'{100 * top:.0f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _figure_data_uri(decoded, grid: tuple[int, int]) -> tuple[str | None, str | None]:
    """(PNG data URI of the example's attention figure, or None; a note on why there is none)."""
    if not decoded.words:
        return None, "empty caption: no attention to draw"
    try:
        image = load_image(decoded.image_path)
    except ImageError as e:
        return None, f"image not readable: {e}"
    steps = len(decoded.words)
    locations = None if decoded.location is None else [int(s) for s in decoded.location[:steps]]
    figure = attention_figure(image, decoded.words, decoded.alpha[:steps], grid, locations=locations,
                              panel_size=PANEL_SIZE, columns=PANEL_COLUMNS)
    buffer = io.BytesIO()
    figure.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), None


def _scores_table(evaluation, checkpoint: str | None) -> str:
    scores = evaluation.scores
    rows = []
    for key in scores.keys():
        value = f"{scores.scores[key]:.2f}" if key in scores.scores else \
            f'n/a ({html.escape(scores.unavailable.get(key, "not computed"))})'
        rows.append(f'<tr><th>{html.escape(key)}</th><td class="num">{value}</td></tr>')
    words = evaluation.mean_words()
    details = [
        ("BLEU length ratio", f"{scores.length_ratio:.3f} ({scores.hypothesis_length} candidate tokens / "
                              f"{scores.reference_length:g} closest-reference tokens)"),
        ("mean words", f"generated {words['generated']:.2f}, references {words['references']:.2f}"),
        ("repeated n-grams", repeat_summary(evaluation.repeat_rates())),
        ("attention spread", str(evaluation.attention_spread() or "n/a (no caption has a word)")),
        ("tokenizer", scores.tokenizer_status),
        ("METEOR", scores.meteor_status or "not asked for"),
        ("split", f"{evaluation.split}, {len(evaluation.decoded)} images"),
    ]
    if checkpoint:
        details.append(("checkpoint", checkpoint))
    details += [(f"decoding: {k}", str(v)) for k, v in sorted(evaluation.decoding.items())]
    rows += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in details]
    return '<table class="scores">' + "".join(rows) + "</table>"


def repeat_summary(rates: dict) -> str:
    """One line of `Evaluation.repeat_rates()`: "captions repeating a trigram: generated 4.0%, references 0.6%;
    a bigram: ..." (n/a where there are no captions)."""
    names = {3: "a trigram", 2: "a bigram"}

    def share(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"

    parts = [f"{names.get(n, f'a {n}-gram')}: generated {share(rates['generated'][str(n)])}, references "
             f"{share(rates['references'][str(n)])}" for n in REPORTED_SIZES]
    return "captions repeating " + "; ".join(parts)


def _example_html(decoded, score: float, grid: tuple[int, int], hard_mode: str | None) -> str:
    uri, note = _figure_data_uri(decoded, grid)
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in decoded.references)
    parts = [f'<div class="example" id="example-{html.escape(str(decoded.image_id))}">',
             f'<div class="caption">{html.escape(decoded.caption) or "<i>(empty)</i>"}</div>',
             f"<div>{html.escape(str(decoded.image_id))} &middot; {GALLERY_METRIC} {score:.1f} &middot; "
             f"log p {decoded.log_prob:.2f}</div>",
             f"<div>references:</div><ul>{refs}</ul>"]
    if decoded.location is not None and decoded.words:
        w = grid[1]
        cells = ", ".join(f"{html.escape(word)} ({int(s) // w},{int(s) % w})"
                          for word, s in zip(decoded.words, decoded.location))
        parts.append(f"<div>hard attention, {html.escape(hard_mode or 'chosen')} location per word "
                     f"(row, column of the {grid[0]}x{grid[1]} grid): {cells}</div>")
    if uri is not None:
        parts.append(f'<img class="figure" alt="attention for each word of: {html.escape(decoded.caption)}" '
                     f'src="{uri}">')
    else:
        parts.append(f'<div class="note">{html.escape(note)}</div>')
    parts.append("</div>")
    return "".join(parts)


def report_html(evaluation, grid: tuple[int, int], *, title: str = "Evaluation report",
                checkpoint: str | None = None, count: int = 3) -> str:
    """The report of an `Evaluation` (`sat_tf.evaluation.scoring.evaluate`) as one HTML string.

    Args:
        evaluation: Evaluation. Its scores must include per-image CIDEr (else the gallery uses the first metric
            that has per-image scores).
        grid: (h, w). The encoder's attention grid (the feature manifest's encoder grid).
        title: str. The page heading.
        checkpoint: str or None. The checkpoint the captions came from, shown in the table.
        count: int. Images per gallery group (best, median, worst).
    """
    scores = evaluation.scores
    metric = GALLERY_METRIC if GALLERY_METRIC in scores.per_image else next(iter(scores.per_image), None)
    by_id = {d.image_id: d for d in evaluation.decoded}
    per_image = {i: s for i, s in scores.per_image.get(metric, {}).items() if i in by_id}
    hard_mode = evaluation.decoding.get("hard_inference")
    sections = []
    for group, ids in gallery_selection(per_image, count).items():
        examples = "".join(_example_html(by_id[i], per_image[i], grid, hard_mode) for i in ids)
        sections.append(f"<h3>{group} {len(ids)} by per-image {metric}</h3>{examples}")
    generated = [len(d.words) for d in evaluation.decoded]
    references = [len(r.split()) for d in evaluation.decoded for r in d.references]
    histogram = length_histogram_svg(generated, references)
    legend = (f'<div class="legend"><span style="background:{_GENERATED_COLOR}"></span>generated '
              f'(mean {np.mean(generated) if generated else math.nan:.2f} words)'
              f'<span style="background:{_REFERENCE_COLOR}"></span>references '
              f'(mean {np.mean(references) if references else math.nan:.2f} words)</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f"<h2>Scores (coco-caption, 0-100)</h2>{_scores_table(evaluation, checkpoint)}"
            f"<h2>Caption lengths</h2>{legend}{histogram}"
            f'<h2>Gallery</h2><div class="gallery">{"".join(sections)}</div>'
            "</body></html>\n")


def write_report(path: str | os.PathLike, evaluation, grid: tuple[int, int], **kwargs) -> str:
    """Writes `report_html(evaluation, grid, **kwargs)` to `path` (atomically); returns the path."""
    text = report_html(evaluation, grid, **kwargs)
    return write_atomic(path, lambda f: f.write(text), binary=False, fsync=False)
