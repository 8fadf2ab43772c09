"""The runtime needs no TensorFlow: importing `sat_tf.lite` (and what it uses: the vocabulary file, the pixels, the
caption writer, the image paths) in a fresh interpreter imports no tensorflow, keras or tensorflow_text, and
captioning with the command works where importing them is impossible."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("tensorflow", "keras", "tensorflow_text", "tf_keras", "tensorflow_probability")

# Run in a fresh interpreter: make imports of HEAVY fail loudly, then do what a device does.
BLOCK_HEAVY = f"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("the LiteRT runtime imported " + name)
sys.meta_path.insert(0, Refuse())
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_importing_the_runtime_imports_no_tensorflow(tmp_path):
    code = f"""
import json, sys
import sat_tf.lite, sat_tf.lite.__main__, sat_tf.lite.search, sat_tf.lite.runtime, sat_tf.lite.captioner
import sat_tf.images, sat_tf.images.paths, sat_tf.inference.caption_writer, sat_tf.inference.captioned
import sat_tf.decoding.ranking, sat_tf.text
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_vocabulary_pixels_writer_and_search_work_without_tensorflow(tmp_path):
    code = BLOCK_HEAVY + """
import sys
import numpy as np
from PIL import Image
from sat_tf.decoding.ranking import ranking_scores
from sat_tf.images.load import load_pixels
from sat_tf.inference.caption_writer import CaptionWriter
from sat_tf.lite.search import beam_search
from sat_tf.text.vocabulary import Vocabulary

folder = sys.argv[1]
vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog"])
vocabulary.save(folder + "/vocab.txt")
assert Vocabulary.load(folder + "/vocab.txt").decode([1, 4, 5, 2, 0]) == "a dog"
Image.new("RGB", (50, 30), (10, 20, 30)).save(folder + "/photo.png")
pixels = load_pixels(folder + "/photo.png", 16)
assert pixels.shape == (16, 16, 3) and pixels.dtype == np.float32 and np.allclose(pixels, [10, 20, 30], atol=1e-4)
assert np.allclose(ranking_scores([[-4.0]], [[4]], 1.0), -1.0)
table = np.log(np.full((6, 6), 1 / 6, np.float32))  # a uniform next-word model over 6 tokens
def step(tokens, h, c, annotations, projected):
    return {"log_probs": table[tokens], "h": h, "c": c, "alpha": np.ones((len(tokens), 1), np.float32)}
encoded = {"annotations": np.zeros((1, 1, 1), np.float32), "projected": np.zeros((1, 1, 1), np.float32),
           "h": np.zeros((1, 1), np.float32), "c": np.zeros((1, 1), np.float32)}
beams = beam_search(step, encoded, 2, 4, no_repeat_ngram_size=1)
assert beams["tokens"].shape == (1, 2, 4)
with CaptionWriter(folder + "/out.jsonl") as writer:
    writer.write("photo.png", "a dog", -1.0)
print("ok")
"""
    out = _run(code, str(tmp_path))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_command_captions_where_tensorflow_cannot_be_imported(lite_model, photos):
    code = BLOCK_HEAVY + """
import sys
from sat_tf.lite.__main__ import main
sys.exit(main(sys.argv[1:]))
"""
    out = _run(code, "caption", "--model", lite_model, *photos[:2])
    assert out.returncode == 0, out.stderr
    assert [line.split("\t")[0] for line in out.stdout.splitlines()] == photos[:2]


def test_the_heavy_imports_are_really_refused():
    """The guard of the tests above works: importing TensorFlow under it fails (where it is installed or not)."""
    out = _run(BLOCK_HEAVY + "import tensorflow")
    assert out.returncode != 0 and ("the LiteRT runtime imported tensorflow" in out.stderr
                                    or "No module named" in out.stderr)


def test_the_command_has_help_without_tensorflow():
    out = _run(BLOCK_HEAVY + "import runpy, sys; sys.argv = ['sat_tf.lite', 'caption', '--help']; "
                             "runpy.run_module('sat_tf.lite', run_name='__main__')")
    assert out.returncode == 0 and "--no-repeat-ngram-size" in out.stdout, out.stderr
