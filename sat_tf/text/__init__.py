"""Caption text: normalisation, tokenisation and the vocabulary file (one format for training, decoding,
evaluation and export). Importing it does not import TensorFlow: `VocabularyTable` (the graph-side tables) is
loaded when first named, and the normalisation functions import TensorFlow when called."""

from sat_tf.text.vocabulary import (END, END_ID, PAD, PAD_ID, SPECIAL_TOKENS, START, START_ID, UNK, UNK_ID,
                                    Vocabulary, normalize_caption, normalize_captions, tokenize_caption,
                                    tokenize_captions)

__all__ = ["END", "END_ID", "PAD", "PAD_ID", "SPECIAL_TOKENS", "START", "START_ID", "UNK", "UNK_ID", "Vocabulary",
           "VocabularyTable", "normalize_caption", "normalize_captions", "tokenize_caption", "tokenize_captions"]


def __getattr__(name: str):
    if name == "VocabularyTable":
        from sat_tf.text.vocabulary_table import VocabularyTable

        return VocabularyTable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
