"""The paper's attention figure (Xu et al. 2015, Figs. 2-3): one panel per generated word, each showing where the
model looked when it produced that word, drawn with Pillow and numpy only.

Each panel is the image resized to P x P, darkened, with the word's attention map laid over it as a bright
(white) glow: white where attended, dark elsewhere, as in the paper. The map is reshaped to the encoder's grid,
upsampled smoothly to P x P and min-max normalised to [0, 1] per word. For hard attention, pass the sampled (or
argmax) `locations`: each panel then lights the one chosen cell, with softened edges.

Shapes: H, W image height/width; T words (= decoding steps); L = h * w attention locations on an (h, w) grid
(row-major, as the encoder's (h, w, D) feature map is flattened); P panel size in pixels.

Layout: panels sit on a grid of `columns` per row; each cell is a LABEL_HEIGHT-pixel label strip above a P x P
panel, with PANEL_MARGIN pixels around both. `figure_size` and `figure_panel_boxes` give the geometry.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sat_tf.files import write_atomic

PANEL_MARGIN = 4     # pixels around each label + panel cell
LABEL_HEIGHT = 20    # pixels of the word strip above each panel
FONT_SIZE = 14       # the default font's size where Pillow has FreeType (else its fixed bitmap font)
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
DIM = 0.3            # brightness kept by unattended pixels
GLOW = 0.6           # weight of the white overlay at full attention
SOFT_SIGMA = 0.5     # Gaussian width, in grid cells, of the smooth upsampling of soft attention maps
HARD_SIGMA = 0.2     # ... and of the hard one-cell mask: nearly a box, with softened edges


def figure_size(num_words: int, panel_size: int = 224, columns: int = 5) -> tuple[int, int]:
    """(width, height) in pixels of the figure for `num_words` panels.

    Args:
        num_words: int. T, the number of panels.
        panel_size: int. P, the side of each square panel in pixels.
        columns: int. Panels per row.
    """
    _check_layout(num_words, panel_size, columns)
    cell_w, cell_h = _cell_size(panel_size)
    return min(num_words, columns) * cell_w, math.ceil(num_words / columns) * cell_h


def figure_panel_boxes(num_words: int, panel_size: int = 224, columns: int = 5
                       ) -> list[tuple[int, int, int, int]]:
    """Pixel box (left, top, right, bottom) of each word's P x P image panel (label strip excluded), in order.

    Args:
        num_words: int. T, the number of panels.
        panel_size: int. P, the side of each square panel in pixels.
        columns: int. Panels per row.
    """
    _check_layout(num_words, panel_size, columns)
    cell_w, cell_h = _cell_size(panel_size)
    boxes = []
    for k in range(num_words):
        left = (k % columns) * cell_w + PANEL_MARGIN
        top = (k // columns) * cell_h + PANEL_MARGIN + LABEL_HEIGHT
        boxes.append((left, top, left + panel_size, top + panel_size))
    return boxes


def attention_figure(image: np.ndarray, words: Sequence[str], alphas: np.ndarray | None,
                     grid: tuple[int, int], *, locations: Sequence[int] | None = None, panel_size: int = 224,
                     columns: int = 5) -> Image.Image:
    """Draws one panel per word: the image with that word's attention as a white glow, the word above it.

    Args:
        image: (H, W, 3) uint8 RGB array.
        words: the T generated words, one per panel (e.g. the decoded caption, with or without "<end>").
        alphas: (T, L) attention weights, row t being the alpha that produced word t. May be None when
            `locations` is given.
        grid: (h, w) with h * w == L: the encoder's feature-map grid (e.g. (14, 14) or (7, 7)).
        locations: optional T cell indices in [0, L) (hard attention, Sec. 4.1: the sampled or argmax s_t).
            When given, each panel highlights that one cell instead of the soft map.
        panel_size: int. P, the side of each square panel in pixels (the paper's 224).
        columns: int. Panels per row.

    Returns:
        An RGB PIL.Image of `figure_size(T, panel_size, columns)`.

    Raises:
        ValueError: a non-(H, W, 3) or non-uint8 image, empty or non-string words, alphas not (T, L) with T equal
            to len(words) and L equal to h * w, non-finite alphas, locations of the wrong length or out of
            range, or a bad grid / panel_size / columns; the message names the argument.
    """
    words = _check_words(words)
    grid_h, grid_w = _check_grid(grid)
    image = _check_image(image)
    _check_layout(len(words), panel_size, columns)
    num_cells = grid_h * grid_w
    if alphas is None and locations is None:
        raise ValueError("alphas is None: pass the (T, L) attention weights, or locations for hard attention")
    if alphas is not None:
        _check_alphas(alphas, len(words), grid_h, grid_w)
    if locations is not None:
        maps = _hard_masks(_check_locations(locations, len(words), num_cells), num_cells)  # (T, L)
        sigma = HARD_SIGMA
    else:
        maps = np.asarray(alphas, dtype=np.float64)  # (T, L)
        sigma = SOFT_SIGMA

    base = np.asarray(Image.fromarray(image).resize((panel_size, panel_size), Image.BICUBIC),
                      dtype=np.float64)  # (P, P, 3)
    up_rows = _smooth_upsample_matrix(grid_h, panel_size, sigma)  # (P, h)
    up_cols = _smooth_upsample_matrix(grid_w, panel_size, sigma)  # (P, w)

    figure = Image.new("RGB", figure_size(len(words), panel_size, columns), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    font = _label_font()
    for word, cell_map, box in zip(words, maps, figure_panel_boxes(len(words), panel_size, columns)):
        heat = up_rows @ cell_map.reshape(grid_h, grid_w) @ up_cols.T  # (P, P)
        heat = _normalise(heat)[..., None]                              # (P, P, 1) in [0, 1]
        panel = base * (DIM + (1.0 - DIM) * heat) * (1.0 - GLOW * heat) + 255.0 * GLOW * heat  # (P, P, 3)
        figure.paste(Image.fromarray(np.clip(np.rint(panel), 0, 255).astype(np.uint8)), box[:2])
        _draw_label(draw, font, word, box, panel_size)
    return figure


def save_attention_figure(path: str | os.PathLike, image: np.ndarray, words: Sequence[str],
                          alphas: np.ndarray | None, grid: tuple[int, int], *,
                          locations: Sequence[int] | None = None, panel_size: int = 224,
                          columns: int = 5) -> str:
    """Draws `attention_figure(...)` and writes it as PNG to `path` (parent folders created, written atomically).

    Args:
        path: str or PathLike. Output file; written as PNG whatever its suffix.
        image, words, alphas, grid, locations, panel_size, columns: as in `attention_figure`.

    Returns:
        str. The path written.
    """
    figure = attention_figure(image, words, alphas, grid, locations=locations, panel_size=panel_size,
                              columns=columns)
    return write_atomic(path, lambda f: figure.save(f, format="PNG"), binary=True, fsync=False)


# ----------------------------------------------------------------------------------------------------------
# Maps
# ----------------------------------------------------------------------------------------------------------

def _smooth_upsample_matrix(cells: int, size: int, sigma: float) -> np.ndarray:
    """(size, cells) matrix: each pixel a Gaussian-weighted average of the cells around it (rows sum to 1).

    Multiplying a (h, w) map on both sides upsamples it separably: a smooth interpolation through the cell
    centres for sigma ~ 0.5 cell, nearly nearest-neighbour (a softened box) for small sigma.
    """
    pixel_centres = (np.arange(size) + 0.5) * cells / size  # (size,) in cell units
    cell_centres = np.arange(cells) + 0.5                    # (cells,)
    logits = -0.5 * ((pixel_centres[:, None] - cell_centres[None, :]) / sigma) ** 2  # (size, cells)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))  # shifted so far pixels never underflow to 0/0
    return weights / weights.sum(axis=1, keepdims=True)


def _normalise(heat: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a flat map (uniform attention) is lit everywhere rather than divided by zero."""
    low, high = float(heat.min()), float(heat.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.ones_like(heat)
    return (heat - low) / (high - low)


def _hard_masks(locations: np.ndarray, num_cells: int) -> np.ndarray:
    """(T,) cell indices -> (T, L) one-hot masks."""
    masks = np.zeros((len(locations), num_cells), dtype=np.float64)  # (T, L)
    masks[np.arange(len(locations)), locations] = 1.0
    return masks


# ----------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------

def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # FreeType builds of Pillow >= 10.1
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _draw_label(draw: ImageDraw.ImageDraw, font, word: str, box: tuple[int, int, int, int],
                panel_size: int) -> None:
    """Writes `word` centred in the label strip above `box`, shortened with "..." if wider than the panel."""
    text = word
    try:
        while text and draw.textlength(text, font=font) > panel_size:
            text = text[:-1]
    except UnicodeEncodeError:  # Pillow's bitmap font (no FreeType) covers Latin-1 only
        text = word.encode("latin-1", "replace").decode("latin-1")
        while text and draw.textlength(text, font=font) > panel_size:
            text = text[:-1]
    if text != word and len(text) > 3:
        text = text[:-3] + "..."
    left, top, right, _ = box
    draw.text(((left + right) / 2, top - LABEL_HEIGHT / 2), text, fill=TEXT_COLOR, font=font, anchor="mm")


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------

def _cell_size(panel_size: int) -> tuple[int, int]:
    """(width, height) of one panel's cell: the P x P panel, its label strip above, margins around."""
    return panel_size + 2 * PANEL_MARGIN, LABEL_HEIGHT + panel_size + 2 * PANEL_MARGIN


def _check_layout(num_words: int, panel_size: int, columns: int) -> None:
    if isinstance(num_words, bool) or not isinstance(num_words, (int, np.integer)) or num_words < 1:
        raise ValueError(f"num_words must be a positive int, got {num_words!r}")
    if isinstance(panel_size, bool) or not isinstance(panel_size, (int, np.integer)) or panel_size < 1:
        raise ValueError(f"panel_size must be a positive int, got {panel_size!r}")
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")


def _check_words(words: Sequence[str]) -> list[str]:
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise ValueError(f"words must be a sequence of str (one per panel), got {type(words).__name__}")
    if len(words) == 0:
        raise ValueError("words is empty: there must be one word per panel")
    for k, word in enumerate(words):
        if not isinstance(word, str):
            raise ValueError(f"words[{k}] must be a str, got {type(word).__name__}")
    return list(words)


def _check_grid(grid: tuple[int, int]) -> tuple[int, int]:
    if (not isinstance(grid, Sequence) or len(grid) != 2
            or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1 for g in grid)):
        raise ValueError(f"grid must be two positive ints (h, w), got {grid!r}")
    return int(grid[0]), int(grid[1])


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be an (H, W, 3) RGB array, got shape {shape} ({type(image).__name__})")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB in 0..255, got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def _check_alphas(alphas: np.ndarray, num_words: int, grid_h: int, grid_w: int) -> None:
    shape = np.shape(alphas)
    if len(shape) != 2:
        raise ValueError(f"alphas must be a (T, L) array, got shape {shape}")
    if shape[0] != num_words:
        raise ValueError(f"alphas has T={shape[0]} rows but words has {num_words} words: one alpha row per word")
    if shape[1] != grid_h * grid_w:
        raise ValueError(f"alphas has L={shape[1]} locations but grid {(grid_h, grid_w)} has "
                         f"h*w={grid_h * grid_w}")
    if not np.all(np.isfinite(np.asarray(alphas, dtype=np.float64))):
        raise ValueError("alphas has non-finite values (NaN or inf)")


def _check_locations(locations: Sequence[int], num_words: int, num_cells: int) -> np.ndarray:
    locations = np.asarray(locations)
    if locations.ndim != 1 or len(locations) != num_words:
        raise ValueError(f"locations must hold one cell index per word ({num_words}), got shape {locations.shape}")
    if not np.issubdtype(locations.dtype, np.integer):
        raise ValueError(f"locations must be integer cell indices, got dtype {locations.dtype}")
    if np.any(locations < 0) or np.any(locations >= num_cells):
        raise ValueError(f"locations must lie in [0, {num_cells}) for the grid, got {locations.tolist()}")
    return locations.astype(np.int64)
