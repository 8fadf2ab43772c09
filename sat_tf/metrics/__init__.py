"""Evaluation metrics: coco-caption scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr) computed offline."""

from sat_tf.metrics.coco_caption import (
    CaptionScores,
    coco_image_id,
    find_java,
    python_ptb_tokenize,
    read_coco_results,
    score_captions,
    write_coco_results,
)

__all__ = [
    "CaptionScores",
    "coco_image_id",
    "find_java",
    "python_ptb_tokenize",
    "read_coco_results",
    "score_captions",
    "write_coco_results",
]
