"""Evaluation: a trained captioner's captions of a split, scored the paper's way, and the report to look at them.

    scoring.py   decode a split with batched beam search (`decode_split`), score it with coco-caption (0-100), the
                 grounding rate on the scenes dataset, repeat rates and attention spread (`evaluate`)
    report.py    the self-contained HTML report beside the metrics JSON (scores, gallery with attention, lengths)

`python -m sat_tf.evaluate` is the command; the metrics themselves are `sat_tf.metrics`. Import from the modules
(`from sat_tf.evaluation.scoring import evaluate`): the package imports neither.
"""
