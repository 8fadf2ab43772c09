"""The model card (README.md) of a preset, written from its metadata: what the model is for, what it was trained on
and under which terms, how it scores with which decoding, what it cannot do, its known biases, how to cite it."""

from __future__ import annotations

SCORE_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")

DATASET_TERMS = {
    "scenes": ("sat_tf's embedded scenes dataset: generated pictures of coloured shapes with template captions, no "
               "terms attached. The model knows only shapes and colours."),
    "flickr8k": (
        "Flickr8k (M. Hodosh, P. Young and J. Hockenmaier, \"Framing Image Description as a Ranking Task: Data, "
        "Models and Evaluation Metrics\", JAIR 47, 853-899, 2013): 8,091 Flickr photos with five English captions "
        "each, crowd-sourced. Trained on the official train split (6,000 photos); the dev split (1,000 photos) chose "
        "the epoch and the decoding settings. **Flickr8k is distributed by the University of Illinois for research "
        "use only**; the photos remain their Flickr owners'. This model was trained on it: use it for research, "
        "teaching and prototypes, and check the terms before using it in a product."),
}

CITATION = """```bibtex
@inproceedings{xu2015show,
  title     = {Show, Attend and Tell: Neural Image Caption Generation with Visual Attention},
  author    = {Xu, Kelvin and Ba, Jimmy and Kiros, Ryan and Cho, Kyunghyun and Courville, Aaron and
               Salakhudinov, Ruslan and Zemel, Rich and Bengio, Yoshua},
  booktitle = {Proceedings of the 32nd International Conference on Machine Learning},
  pages     = {2048--2057},
  year      = {2015}
}
@article{hodosh2013framing,
  title   = {Framing Image Description as a Ranking Task: Data, Models and Evaluation Metrics},
  author  = {Hodosh, Micah and Young, Peter and Hockenmaier, Julia},
  journal = {Journal of Artificial Intelligence Research},
  volume  = {47},
  pages   = {853--899},
  year    = {2013}
}
```"""


def _scores_table(evaluation: dict) -> str:
    rows = ["| photos | " + " | ".join(SCORE_KEYS) + " |",
            "|---|" + "---|" * len(SCORE_KEYS)]
    entries = [(f"all {evaluation['images']} {evaluation['split']} photos", evaluation["scores"])]
    entries += [(f"first {s['images']} {evaluation['split']} photos", s["scores"])
                for s in evaluation.get("subsets", [])]
    for label, scores in entries:
        cells = [f"{scores[key]:.2f}" if isinstance(scores.get(key), (int, float)) else "n/a" for key in SCORE_KEYS]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def model_card(metadata: dict, train_config) -> str:
    """The card's Markdown text.

    Args:
        metadata: dict. The preset's metadata.json payload.
        train_config: TrainConfig. The preset's decoding settings (beam size, length penalty, ...).
    """
    name, encoder = metadata["name"], metadata["encoder"]
    attention = metadata["attention"]
    grid = "x".join(str(g) for g in encoder["grid"])
    evaluation = metadata.get("evaluation")
    decoding = (evaluation or {}).get("decoding") or {
        "beam_size": train_config.beam_size, "length_penalty": train_config.length_penalty,
        "max_length": train_config.max_length}
    decoding_text = ", ".join(f"{k} {v}" for k, v in decoding.items())
    commands = "\n".join(metadata.get("training_commands") or ["(not recorded)"])
    if evaluation:
        scored = (f"Scored by sat_tf's own evaluation (coco-caption code, 0-100) on the {evaluation['split']} split "
                  f"with the weights as stored here ({metadata['weights']['dtype']}) and this decoding: "
                  f"{decoding_text}.\n\n{_scores_table(evaluation)}")
    else:
        scored = "Not scored when it was exported (no features of an evaluation split were at hand)."
    data = DATASET_TERMS.get(metadata.get("dataset"), f"The {metadata.get('dataset')} dataset; see its own terms.")
    attention_text = ("hard (stochastic) attention: trained with REINFORCE to look at one sampled location per "
                      "word; decoded with the expected context, as the authors did"
                      if attention == "hard" else "soft attention: a weighted average of the locations per word")
    return f"""# {name}

{metadata.get('description') or 'A Show, Attend and Tell image captioner.'}

- **Model**: Show, Attend and Tell (Xu et al., ICML 2015) with {attention_text}.
- **Encoder**: {encoder['name']} ({encoder['layer']} layer: a {grid} grid of {encoder['feature_dim']}-d annotations
  from a {encoder['image_size']}x{encoder['image_size']} photo), ImageNet weights from the installed encoder package.
- **Decoder**: LSTM with deep output, {metadata['weights']['parameters']:,} parameters stored as
  {metadata['weights']['dtype']}; a vocabulary of {metadata['vocabulary']['size']} words.
- **Versions**: sat_tf {metadata['sat_tf_version']}, Keras {metadata['keras_version']}, TensorFlow
  {metadata['tensorflow_version']}.

## Use

```bash
python -m sat_tf.caption --preset {name} photo.jpg
```

```python
from sat_tf.inference.image_captioner import ImageCaptioner
print(ImageCaptioner.from_preset("{name}").caption(["photo.jpg"])[0].caption)
```

Intended use: describing everyday photos in one English sentence for research, teaching, prototypes, accessibility
experiments and inspecting where a captioning model looks (attention per word). Not intended for decisions about
people, surveillance, or as the only description of an image for a blind or low-vision user without review.

## Training data

{data}

Trained with:

```bash
{commands}
```

## Evaluation

{scored}

## Limitations

- Trained on 224x224 photos squashed without keeping the aspect ratio; fine detail and small objects are lost.
- English only, short captions (at most {train_config.max_length} words) in Flickr's style: people, dogs, sports and
  outdoor scenes dominate; indoor objects, text in images, medical, satellite or document images are out of scope.
- It names only words it saw at least five times in training; anything else it describes with the nearest common
  word or not at all. Captions can be fluent and wrong.

## Biases

Caption models learn their training captions' habits. Known ones: gendered words guessed from context rather than
from the person ("man" for anyone at a computer or on a snowboard; Hendricks et al., "Women also Snowboard:
Overcoming Bias in Captioning Models", ECCV 2018), skin colour and age mentioned unevenly, and Western scenes
described better than others. Do not use the gender, age or ethnicity words of a caption as facts about a person.

## Cite

{CITATION}
"""
