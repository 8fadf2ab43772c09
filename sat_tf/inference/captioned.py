"""One image's captioning result, the same from every captioner: `ImageCaptioner` (TensorFlow,
`sat_tf.inference.image_captioner`) and `sat_tf.lite.LiteCaptioner` (LiteRT, no TensorFlow). numpy only.

Shapes: W words of the caption, L locations.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Captioned:
    """One image's result: `caption` and `words`, `alpha` (W, L) per word, hard `location` (W,), or `error`.

    Args:
        path: str. The image file.
        caption: str. The words joined by spaces ("" on error).
        words: list of str.
        alpha: float32 (W, L) or None. The attention over the L locations while each word was chosen.
        location: int (W,) or None. Hard attention's attended location per word, where the decoder has one.
        log_prob: float. The caption's summed log-probability (NaN on error).
        error: str or None. Why the image has no caption.
    """

    path: str
    caption: str = ""
    words: list[str] = dataclasses.field(default_factory=list)
    alpha: np.ndarray | None = None
    location: np.ndarray | None = None
    log_prob: float = float("nan")
    error: str | None = None
