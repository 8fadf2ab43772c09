"""Attention grounding: how often the attention behind an object word peaks inside that object's box.

For every generated word that names an object of the image (a link given by `link_fn`, by default the scenes
dataset's `object_words`: shape nouns and their colour adjectives), take the attention alpha used to produce that
word, find its peak cell, and count a hit where the centre of that cell lies inside the object's box. The rate
means something only beside what a peak with no idea of the object would score, so the result also carries two
chance baselines: the mean share of the image the boxes cover (`chance`) and the mean share of grid cells whose
centre lies in the box (`chance_cells`, exactly the rate of a peak drawn uniformly over the cells).

Cells and pixels: the encoder sees the whole image squashed to its input size (no crop), so the grid of h x w
cells tiles the whole image: cell (r, c) covers [c W / w, (c + 1) W / w) x [r H / h, (r + 1) H / h) in pixel-edge
coordinates, and its centre is ((c + 1/2) W / w, (r + 1/2) H / h). Location l of alpha is cell (l // w, l % w), the
row-major order of the encoder's reshape (B, h, w, D) -> (B, L, D). Boxes are (x0, y0, x1, y1), half-open like the
cells: a point (x, y) is inside where x0 <= x < x1 and y0 <= y < y1. A pipeline that crops must map boxes into the
cropped frame first.

Shapes: L = h * w locations, T decoding steps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable, Sequence

import numpy as np

from sat_tf.pipelines.sources.scenes import object_words

Box = Sequence[float]  # (x0, y0, x1, y1)
LinkFn = Callable[[Sequence[str], Sequence[dict]], Sequence[tuple[int, int]]]
END_WORD = "<end>"


def cell_centre(location: int, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, float]:
    """The pixel coordinates (x, y) of a location's cell centre.

    Args:
        location: int in [0, h * w). Row-major index into the grid.
        grid: (h, w). Cells down and across.
        image_size: (H, W). Pixels down and across.

    Returns:
        (x, y) = ((c + 1/2) W / w, (r + 1/2) H / h) with (r, c) = divmod(location, w).
    """
    h, w = grid
    height, width = image_size
    if not 0 <= location < h * w:
        raise ValueError(f"location {location} is outside a {h} x {w} grid")
    r, c = divmod(location, w)
    return (c + 0.5) * width / w, (r + 0.5) * height / h


def _inside(x: float, y: float, box: Box) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= x < x1 and y0 <= y < y1


def attention_peak_in_box(alpha: np.ndarray, grid: tuple[int, int], box: Box, image_size: tuple[int, int]) -> bool:
    """Whether the centre of the cell where alpha peaks lies inside a box.

    Args:
        alpha: (L,) attention weights over the grid's cells, row-major. Ties go to the first cell (np.argmax).
        grid: (h, w) with h * w = L.
        box: (x0, y0, x1, y1) in pixels, half-open.
        image_size: (H, W) of the image the box is measured in.

    Returns:
        True where x0 <= x < x1 and y0 <= y < y1 for the peak cell's centre (x, y).
    """
    alpha = np.asarray(alpha).reshape(-1)  # (L,)
    h, w = grid
    if alpha.size != h * w:
        raise ValueError(f"alpha has {alpha.size} locations, the {h} x {w} grid has {h * w}")
    return _inside(*cell_centre(int(np.argmax(alpha)), grid, image_size), box)


def _chance(box: Box, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, float]:
    """(share of the image's area inside the box, share of cells whose centre is inside the box)."""
    h, w = grid
    height, width = image_size
    x0, y0, x1, y1 = box
    area = max(0.0, min(x1, width) - max(x0, 0)) * max(0.0, min(y1, height) - max(y0, 0)) / (height * width)
    xs = (np.arange(w) + 0.5) * width / w  # (w,) cell centres across
    ys = (np.arange(h) + 0.5) * height / h  # (h,)
    cells = np.count_nonzero((xs >= x0) & (xs < x1)) * np.count_nonzero((ys >= y0) & (ys < y1)) / (h * w)
    return area, float(cells)


@dataclasses.dataclass(frozen=True)
class GroundingResult:
    """What `grounding_rate` found.

    Args:
        rate: float. hits / total; NaN where no generated word was linked to an object.
        hits: int. Linked words whose attention peak lies in their object's box.
        total: int. Linked words.
        per_word: dict word -> (hits, total), e.g. {"circle": (40, 52), "red": (17, 30)}.
        chance: float. Mean over linked words of the share of the image's area inside the object's box (NaN
            where total is 0): the rate a peak landing at a uniformly random pixel would score.
        chance_cells: float. Mean share of grid cells whose centre lies in the box: the rate of a peak at a
            uniformly random cell, the exact baseline for this metric (close to `chance` for boxes of many cells).
    """

    rate: float
    hits: int
    total: int
    per_word: dict[str, tuple[int, int]]
    chance: float
    chance_cells: float

    def __str__(self) -> str:
        return (f"attention grounding {self.rate:.3f} ({self.hits}/{self.total} object words; chance "
                f"{self.chance:.3f} by area, {self.chance_cells:.3f} by cells)")


def grounding_rate(samples: Iterable[tuple[Sequence[str], np.ndarray, Sequence[dict]]], grid: tuple[int, int],
                   image_size: tuple[int, int], link_fn: LinkFn = object_words) -> GroundingResult:
    """The share of generated object words whose attention peaks inside the object's box.

    Step alignment: word t of a caption (0-based, <start> not counted) is scored with alpha row t, the attention
    of the decoding step that PRODUCED word t (the step that reads word t - 1, or <start> for t = 0, attends with
    alpha_t, and emits word t), not the step that reads word t as input.

    Args:
        samples: iterable of (words, alphas, objects): `words` the generated words without <start> (anything from
            an "<end>" on is dropped); `alphas` (T, L) with T >= len(words), row t the attention that produced word
            t (rows past the last word, such as the <end> step's, are ignored); `objects` the image's objects,
            dicts with at least "box" (x0, y0, x1, y1) in pixels of an image of `image_size`, plus whatever
            `link_fn` reads ("shape", "colour", "size" for `object_words`).
        grid: (h, w) with h * w = L.
        image_size: (H, W) of the images the boxes are measured in.
        link_fn: (words, objects) -> [(word index, object index)], the words that name an object. Default: the
            scenes dataset's `object_words`.

    Returns:
        A GroundingResult.

    Raises:
        ValueError: alphas of the wrong shape, or a link to a word or object that does not exist.
    """
    h, w = grid
    hits = total = 0
    per_word: dict[str, list[int]] = {}
    area_sum = cells_sum = 0.0
    for words, alphas, objects in samples:
        words = list(words)
        if END_WORD in words:
            words = words[:words.index(END_WORD)]
        alphas = np.asarray(alphas)
        if alphas.ndim != 2 or alphas.shape[1] != h * w:
            raise ValueError(f"alphas must be (T, L={h * w}) for a {h} x {w} grid, got shape {alphas.shape}")
        if alphas.shape[0] < len(words):
            raise ValueError(f"{len(words)} words but only {alphas.shape[0]} alpha rows: each word needs the row "
                             "of the step that produced it")
        for t, k in link_fn(words, objects):
            if not (0 <= t < len(words) and 0 <= k < len(objects)):
                raise ValueError(f"link ({t}, {k}) points outside {len(words)} words / {len(objects)} objects")
            box = objects[k]["box"]
            hit = attention_peak_in_box(alphas[t], grid, box, image_size)  # alphas[t]: (L,)
            area, cells = _chance(box, grid, image_size)
            hits += hit
            total += 1
            area_sum += area
            cells_sum += cells
            counts = per_word.setdefault(words[t], [0, 0])
            counts[0] += hit
            counts[1] += 1
    nan = math.nan
    return GroundingResult(rate=hits / total if total else nan, hits=hits, total=total,
                           per_word={word: (c[0], c[1]) for word, c in sorted(per_word.items())},
                           chance=area_sum / total if total else nan,
                           chance_cells=cells_sum / total if total else nan)
