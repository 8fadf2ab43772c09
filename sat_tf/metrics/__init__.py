"""Evaluation metrics: coco-caption scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr) computed offline; repeated n-grams."""

from sat_tf.metrics.coco_caption import (
    CaptionScores,
    coco_image_id,
    find_java,
    python_ptb_tokenize,
    score_captions,
    write_coco_results,
)
from sat_tf.metrics.repetition import has_repeated_ngram, repeat_rate, repeated_ngrams

__all__ = [
    "CaptionScores",
    "coco_image_id",
    "find_java",
    "has_repeated_ngram",
    "python_ptb_tokenize",
    "repeat_rate",
    "repeated_ngrams",
    "score_captions",
    "write_coco_results",
]
