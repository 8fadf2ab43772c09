"""Caption text: normalisation, tokenisation and the vocabulary file (one format for training, decoding,
evaluation and export). Importing it does not import TensorFlow: the normalisation functions import TensorFlow when
called."""

from sat_tf.text.vocabulary import (END, END_ID, PAD, PAD_ID, SPECIAL_TOKENS, START, START_ID, UNK, UNK_ID,
                                    Vocabulary, normalize_caption, tokenize_caption, tokenize_captions)

__all__ = ["END", "END_ID", "PAD", "PAD_ID", "SPECIAL_TOKENS", "START", "START_ID", "UNK", "UNK_ID", "Vocabulary",
           "normalize_caption", "tokenize_caption", "tokenize_captions"]
