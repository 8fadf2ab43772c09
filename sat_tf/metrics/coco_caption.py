"""Caption scores the coco-caption way (BLEU-1..4, METEOR, ROUGE-L, CIDEr), offline.

Xu et al. (2015, Tables 1-2) scored with the coco-caption code; this module calls the same scorers from
`pycocoevalcap` one by one, after the same Stanford PTB tokenisation, and reports them on the paper's 0-100
scale (CIDEr x100 too, as papers print it: 0.457 -> 45.7). `COCOEvalCap.evaluate()` is deliberately not used:
it always builds SPICE, which downloads Stanford CoreNLP at first use and fails offline.

Two of the pieces run Java (`java` on PATH): the PTB tokenizer and METEOR 1.5. Where Java is missing or its
process fails, the result says so instead of reporting zeros:
- tokenisation falls back to `python_ptb_tokenize`, a pure-Python approximation of PTBTokenizer plus
  coco-caption's punctuation filter (`CaptionScores.tokenizer` says which one ran, `tokenizer_note` why);
- METEOR is reported in `CaptionScores.unavailable` with the reason, and is absent from `scores`.
Every score table (`CaptionScores.format_table`) and JSON (`CaptionScores.as_dict`) states which tokenizer and
METEOR ran, and BLEU's length ratio: total hypothesis tokens over the effective reference length (per image the
reference closest in length, as coco-caption's BLEU picks it); below 1 the brevity penalty applies.

Shapes: N images scored (the candidate ids), R_i references of image i.

Ids are image ids (any hashable, usually `str`); candidates and references must use the same id type.
References of images that have no candidate are ignored, as in coco-caption, which scores the images of the
results file; note that CIDEr's document frequencies therefore come from the scored images only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import threading
from typing import Any, Callable, Hashable, Mapping, Sequence

from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer

from sat_tf.files import write_json_atomic

ALL_METRICS = ("bleu", "meteor", "rouge", "cider")
# Report keys per metric name, in report order.
METRIC_KEYS = {
    "bleu": ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"),
    "meteor": ("METEOR",),
    "rouge": ("ROUGE-L",),
    "cider": ("CIDEr",),
}
TOKENIZER_NAMES = {"ptb": "PTB (Stanford PTBTokenizer, Java)", "python": "Python fallback (python_ptb_tokenize)"}
METEOR_NAME = "METEOR 1.5 (Java)"
SCALE = 100.0  # the paper's scale: BLEU 0.671 -> 67.1; CIDEr 0.457 -> 45.7
METEOR_TIMEOUT_S = 300.0

JavaLookup = Callable[[], "str | None"]


def find_java() -> str | None:
    """The default Java lookup: the `java` executable on PATH, or None.

    pycocoevalcap launches `java` through PATH itself, so this decides only whether the Java-backed pieces are
    attempted; a test passes `java_lookup=lambda: None` to simulate a machine without Java.
    """
    return shutil.which("java")


@dataclasses.dataclass
class CaptionScores:
    """Corpus-level and per-image caption scores on the 0-100 scale.

    Args:
        scores: dict. Report key ("BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr") -> corpus score. A metric
            that could not run is absent here and present in `unavailable`.
        per_image: dict. Report key -> {image id: score}. BLEU's per-image values are coco-caption's
            sentence-level BLEU (own brevity penalty); the corpus BLEU is NOT their mean.
        unavailable: dict. Report key -> why it was not computed (e.g. "java not found on PATH").
        tokenizer: str. "ptb" (Stanford PTBTokenizer, as coco-caption) or "python" (`python_ptb_tokenize`).
        tokenizer_note: str or None. Why the Python fallback tokenizer ran.
        num_images: int. Number of images scored (N).
        metrics: tuple. The metric names asked for, in report order.
        hypothesis_length: int. Tokens of all candidates (after tokenisation), as BLEU counts them.
        reference_length: float. BLEU's effective reference length: per image the reference length closest to the
            candidate's (the shorter on a tie), summed.
    """

    scores: dict[str, float]
    per_image: dict[str, dict[Hashable, float]]
    unavailable: dict[str, str]
    tokenizer: str
    tokenizer_note: str | None
    num_images: int
    metrics: tuple[str, ...] = ALL_METRICS
    hypothesis_length: int = 0
    reference_length: float = 0.0

    @property
    def length_ratio(self) -> float:
        """BLEU's hypothesis / effective reference length (below 1: captions too short, brevity penalty applies)."""
        return self.hypothesis_length / self.reference_length if self.reference_length else float("nan")

    @property
    def meteor_status(self) -> str | None:
        """What METEOR ran as: METEOR_NAME, "unavailable: <why>", or None where it was not asked for."""
        if "meteor" not in self.metrics:
            return None
        if "METEOR" in self.unavailable:
            return f"unavailable: {self.unavailable['METEOR']}"
        return METEOR_NAME

    @property
    def tokenizer_status(self) -> str:
        """The tokenizer that ran, with the reason where the Python fallback stood in for Java's."""
        name = TOKENIZER_NAMES.get(self.tokenizer, self.tokenizer)
        return f"{name}: {self.tokenizer_note}" if self.tokenizer_note else name

    def __getitem__(self, key: str) -> float:
        if key in self.unavailable:
            raise KeyError(f"{key} is unavailable: {self.unavailable[key]}")
        return self.scores[key]

    def keys(self) -> list[str]:
        """Report keys of the metrics asked for, available or not, in report order."""
        return [k for m in self.metrics for k in METRIC_KEYS[m]]

    def as_dict(self, per_image: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: scores, unavailable, tokenizer, tokenizer_note, meteor, the BLEU lengths and their
        ratio, num_images (+ per_image).

        Args:
            per_image: bool. Also include the per-image scores (ids become strings, as JSON keys must).
        """
        out: dict[str, Any] = {
            "scores": {k: self.scores[k] for k in self.keys() if k in self.scores},
            "unavailable": dict(self.unavailable),
            "tokenizer": self.tokenizer,
            "tokenizer_note": self.tokenizer_note,
            "tokenizer_status": self.tokenizer_status,
            "meteor": self.meteor_status,
            "length_ratio": self.length_ratio,
            "hypothesis_length": self.hypothesis_length,
            "reference_length": self.reference_length,
            "num_images": self.num_images,
        }
        if per_image:
            out["per_image"] = {k: {str(i): s for i, s in v.items()} for k, v in self.per_image.items()}
        return out

    def format_table(self) -> str:
        """One line per metric, e.g. "BLEU-4     18.60" or "METEOR     n/a (java not found on PATH)", then the
        length ratio, the tokenizer and METEOR's status (always printed: a fallback must never go unnoticed)."""
        width = max(len(k) for k in self.keys())
        lines = []
        for key in self.keys():
            if key in self.scores:
                lines.append(f"{key:<{width}}  {self.scores[key]:6.2f}")
            else:
                lines.append(f"{key:<{width}}     n/a ({self.unavailable.get(key, 'not computed')})")
        lines.append(f"length ratio {self.length_ratio:.3f} (BLEU: {self.hypothesis_length} candidate tokens / "
                     f"{self.reference_length:g} closest-reference tokens)")
        lines.append(f"tokenizer: {self.tokenizer_status}")
        if self.meteor_status is not None:
            lines.append(f"METEOR: {self.meteor_status}")
        return "\n".join(lines)

    def to_json(self, path: str | os.PathLike, per_image: bool = True) -> None:
        """Writes `as_dict(per_image)` to `path` atomically (temp file in the same folder, then os.replace).

        Args:
            path: str or PathLike. Output file; parent folders are created.
            per_image: bool. Include the per-image scores.
        """
        write_json_atomic(path, self.as_dict(per_image=per_image), indent=1, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------------------

_PUNCTUATIONS = frozenset(PUNCTUATIONS)
# With -lowerCase the PTB bracket tokens come out lower-cased and so survive coco-caption's filter (which lists
# the upper-case forms); the fallback keeps that quirk so both tokenizers give the same n-grams.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITIC = re.compile(r"^(.+?)('s|'m|'d|'re|'ve|'ll)$")
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                "wanna": ("wan", "na")}
_ABBREVIATIONS = frozenset(
    "mr. mrs. ms. dr. st. jr. sr. prof. no. vs. etc. inc. co. corp. ltd. mt. ft. jan. feb. aug. sept. oct. "
    "nov. dec. a.m. p.m.".split())
_LETTER_DOTS = re.compile(r"^(?:[a-z]\.)+$")  # initials: u., u.s., e.g., u.s.a.


def _split_chunk(chunk: str) -> list[str]:
    """PTB-style split of one whitespace-free, lower-cased chunk whose brackets and quotes are already split off."""
    # Peel sentence-final periods and closing single quotes, keeping abbreviations ("u.s.", "mr.").
    while True:
        if chunk.endswith(".") and len(chunk) > 1 and not (
                _LETTER_DOTS.match(chunk) or chunk in _ABBREVIATIONS):
            chunk = chunk[:-1]
        elif chunk.endswith("'") and len(chunk) > 1 and chunk != "'n'":
            chunk = chunk[:-1]
        else:
            break
    # An opening single quote is a quote unless it starts a clitic ("'s") or a year ("'90s").
    while chunk.startswith("'") and len(chunk) > 1 and chunk != "'n'" and not (
            _CLITIC.match("x" + chunk) or chunk[1].isdigit()):
        chunk = chunk[1:]
    if chunk in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[chunk])
    if chunk.endswith("n't") and len(chunk) > 3:
        return [chunk[:-3], "n't"]
    match = _CLITIC.match(chunk)
    if match:
        return [match.group(1), match.group(2)]
    return [chunk]


def python_ptb_tokenize(caption: str) -> str:
    """Pure-Python stand-in for coco-caption's tokenisation (PTBTokenizer -lowerCase + punctuation filter).

    Used only where Java is unavailable. It lower-cases; splits off brackets (as "-lrb-" etc., which coco-caption
    keeps), "$", "%", "&", "#" before digits, runs of "!"/"?" and clitics ("n't", "'s", "'re", ...); splits
    "cannot"/"gonna"; keeps abbreviations ("u.s.", "mr."), decimals ("3.14"), "1,000", "5:30" and word-internal
    hyphens and slashes; then drops coco-caption's punctuation tokens (".", ",", ":", ";", "!", "?", "-", "--",
    "...", quotes). On the 35,000 Flickr8k captions it gave the same token string as the Java tokenizer for
    all but 3, so BLEU/ROUGE-L/CIDEr differ negligibly; it is not a full PTB reimplementation (rare cases such
    as "rock'n'roll", "a=b" or a leading "-" differ).

    Args:
        caption: str. Raw caption.

    Returns:
        str. Space-separated tokens.
    """
    text = " ".join(caption.lower().split())
    text = re.sub(r"\.{2,}|-{2,}", " ", text)            # "..." and "--" are dropped punctuation
    text = re.sub(r"[()\[\]{}]", lambda m: f" {_BRACKETS[m.group()]} ", text)
    text = re.sub(r"[\"`]", " ", text)                   # double quotes / backticks become `` '' and are dropped
    text = re.sub(r"[$%&;]", lambda m: f" {m.group()} ", text)
    text = re.sub(r"#(?=\d)", " # ", text)
    text = re.sub(r"(?<!\d),|,(?!\d)", " ", text)        # "1,000" stays one token
    text = re.sub(r"(?<!\d):|:(?!\d)", " ", text)        # "5:30" stays one token
    text = re.sub(r"[!?]+", lambda m: f" {m.group()} ", text)
    tokens = [tok for chunk in text.split() for tok in _split_chunk(chunk)]
    return " ".join(tok for tok in tokens if tok and tok not in _PUNCTUATIONS)


def _ptb_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Runs pycocoevalcap's PTBTokenizer (Java) and checks that every caption came back."""
    # Whitespace other than " " (\r, \u2028, ...) could end a line in Java and shift every later caption.
    request = {i: [{"caption": " ".join(c.split())} for c in caps] for i, caps in captions.items()}
    tokenized = PTBTokenizer().tokenize(request)
    for i, caps in captions.items():
        if len(tokenized.get(i, ())) != len(caps):
            raise RuntimeError(f"PTBTokenizer returned {len(tokenized.get(i, ()))} captions for image {i!r}, "
                               f"expected {len(caps)}")
    return {i: tokenized[i] for i in captions}


def _tokenize(captions: Mapping[Hashable, Sequence[str]], java: str | None
              ) -> tuple[dict[Hashable, list[str]], str, str | None]:
    """Tokenises all captions at once: (tokenized, tokenizer name, note on why the fallback ran)."""
    note = "java not found on PATH" if java is None else None
    if java is not None:
        try:
            return _ptb_tokenize(captions), "ptb", None
        except Exception as err:  # noqa: BLE001 (any failure of the Java tool -> documented fallback)
            note = f"PTBTokenizer failed: {type(err).__name__}: {err}"
    return {i: [python_ptb_tokenize(c) for c in caps] for i, caps in captions.items()}, "python", note


# ----------------------------------------------------------------------------------------------------------
# METEOR (a long-lived Java subprocess)
# ----------------------------------------------------------------------------------------------------------

class _ClosableMeteor(Meteor):
    """pycocoevalcap's Meteor with a `close()` that always ends the Java process.

    The stock `__del__` takes `self.lock`, which `compute_score` leaves held when it raises (no try/finally), so
    garbage collection would then block forever; it also fails on a half-built object when Popen raised.
    """

    def close(self) -> None:
        proc = getattr(self, "meteor_p", None)
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self.meteor_p = None

    def __del__(self) -> None:
        self.close()


def _meteor_scores(gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]], timeout_s: float
                   ) -> tuple[float, list[float]]:
    """Runs METEOR 1.5; a watchdog kills Java after `timeout_s` so a hung process becomes an error."""
    meteor = _ClosableMeteor()
    proc = meteor.meteor_p
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        return meteor.compute_score(gts, res)
    except Exception as err:  # noqa: BLE001 (re-raised with Java's own message)
        proc.kill()
        stderr = proc.stderr.read().decode(errors="replace").strip()
        detail = f"; java stderr: {stderr[-500:]}" if stderr else ""
        if fired.is_set():
            detail += f" (killed after {timeout_s:g} s)"
        raise RuntimeError(f"{type(err).__name__}: {err}{detail}") from err
    finally:
        watchdog.cancel()
        meteor.close()


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------

def _validate(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str],
              metrics: Sequence[str]) -> tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRIC_KEYS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {ALL_METRICS}, got {metrics!r}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics has duplicates: {metrics!r}")
    if not isinstance(candidates, Mapping) or not isinstance(references, Mapping):
        raise ValueError("references and candidates must be mappings from image id to caption(s)")
    if not candidates:
        raise ValueError("candidates is empty: nothing to score")
    for image_id, caption in candidates.items():
        if not isinstance(caption, str):
            raise ValueError(f"candidate caption of image {image_id!r} must be a str, got "
                             f"{type(caption).__name__}")
        if image_id not in references:
            raise ValueError(f"candidate image {image_id!r} has no references")
        refs = references[image_id]
        if isinstance(refs, (str, bytes)) or not isinstance(refs, Sequence):
            raise ValueError(f"references of image {image_id!r} must be a list of str, got "
                             f"{type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"references of image {image_id!r} are empty")
        for k, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise ValueError(f"reference {k} of image {image_id!r} must be a str, got {type(ref).__name__}")
    return tuple(m for m in ALL_METRICS if m in metrics)


def score_captions(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str], *,
                   metrics: Sequence[str] = ALL_METRICS, java_lookup: JavaLookup = find_java,
                   meteor_timeout_s: float = METEOR_TIMEOUT_S) -> CaptionScores:
    """Scores one candidate caption per image against its references, as coco-caption does.

    Both sides are PTB-tokenised together, then Bleu(4), Meteor, Rouge and Cider from pycocoevalcap run one by
    one over the N candidate images. BLEU is corpus-level (clipped n-gram counts summed over images, brevity
    penalty from the summed "closest" reference lengths); METEOR, ROUGE-L and CIDEr are means over images.

    Args:
        references: Mapping image id -> list of reference captions (R_i >= 1 raw strings).
        candidates: Mapping image id -> one generated caption (raw string; may be empty).
        metrics: subset of ("bleu", "meteor", "rouge", "cider"). Reported in that order.
        java_lookup: callable returning the java executable or None (default: `find_java`, PATH lookup).
            None -> Python tokenisation and METEOR unavailable.
        meteor_timeout_s: float. Kill the METEOR Java process after this long and report METEOR unavailable.

    Returns:
        CaptionScores on the 0-100 scale.

    Raises:
        ValueError: unknown metrics, no candidates, a candidate id without references, empty or non-list
            references, or a non-string caption (the message names the image id).
    """
    metrics = _validate(references, candidates, metrics)
    ids = list(candidates)  # (N,) the order of every per-image list below
    java = java_lookup()

    # One tokenizer call for both sides (keys are tagged so a candidate and a reference list never collide).
    raw = {("ref", i): list(references[i]) for i in ids}
    raw.update({("cand", i): [candidates[i]] for i in ids})
    tokenized, tokenizer, tokenizer_note = _tokenize(raw, java)
    gts = {i: tokenized[("ref", i)] for i in ids}   # image id -> R_i token strings
    res = {i: tokenized[("cand", i)] for i in ids}  # image id -> [1 token string]

    scores: dict[str, float] = {}
    per_image: dict[str, dict[Hashable, float]] = {}
    unavailable: dict[str, str] = {}

    def record(key: str, corpus: float, images: Sequence[float]) -> None:
        scores[key] = float(corpus) * SCALE
        per_image[key] = {i: float(s) * SCALE for i, s in zip(ids, images)}

    bleu = BleuScorer(n=4)  # as pycocoevalcap's Bleu(4), keeping the scorer to read its lengths
    for i in ids:
        bleu += (res[i][0], gts[i])
    bleu_corpus, bleu_images = bleu.compute_score(option="closest")  # 4 lists: BLEU-n for n=1..4
    for metric in metrics:
        if metric == "bleu":
            for key, c, imgs in zip(METRIC_KEYS["bleu"], bleu_corpus, bleu_images):
                record(key, c, imgs)
        elif metric == "meteor":
            if java is None:
                unavailable["METEOR"] = "java not found on PATH"
                continue
            # METEOR's stdio protocol separates fields with "|||"; the stock wrapper strips it from hypotheses only.
            m_gts = {i: [r.replace("|||", " ") for r in refs] for i, refs in gts.items()}
            try:
                corpus, images = _meteor_scores(m_gts, res, meteor_timeout_s)
            except Exception as err:  # noqa: BLE001 (reported, never turned into a 0)
                unavailable["METEOR"] = f"METEOR (java) failed: {err}"
                continue
            if not math.isfinite(corpus):
                unavailable["METEOR"] = f"METEOR returned a non-finite score {corpus!r}"
                continue
            record("METEOR", corpus, images)
        elif metric == "rouge":
            corpus, images = Rouge().compute_score(gts, res)
            record("ROUGE-L", corpus, images)
        elif metric == "cider":
            corpus, images = Cider().compute_score(gts, res)
            record("CIDEr", corpus, images)

    return CaptionScores(scores=scores, per_image=per_image, unavailable=unavailable, tokenizer=tokenizer,
                         tokenizer_note=tokenizer_note, num_images=len(ids), metrics=metrics,
                         hypothesis_length=int(bleu.testlen()), reference_length=float(bleu.reflen()))


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------

def coco_image_id(image_id: Hashable) -> Hashable:
    """COCO results id: an all-ASCII-digit string becomes an int ("000139" -> 139); anything else unchanged."""
    if isinstance(image_id, str) and re.fullmatch(r"[0-9]+", image_id):
        return int(image_id)
    return image_id


def write_coco_results(path: str | os.PathLike, candidates: Mapping[Hashable, str],
                       image_ids: Mapping[Hashable, Hashable] | None = None) -> list[dict[str, Any]]:
    """Writes captions in the COCO results format `[{"image_id": ..., "caption": ...}, ...]` (atomically).

    Args:
        path: str or PathLike. Output JSON file; parent folders are created.
        candidates: Mapping image id -> caption, written in its iteration order.
        image_ids: optional Mapping from candidate id to the image_id to write (e.g. Flickr8k file name -> COCO
            integer id). Without it, an all-digit string id is written as an int, any other id unchanged.

    Returns:
        The list of records written.

    Raises:
        ValueError: a caption that is not a str, or a candidate id missing from `image_ids`.
    """
    records = []
    for key, caption in candidates.items():
        if not isinstance(caption, str):
            raise ValueError(f"caption of image {key!r} must be a str, got {type(caption).__name__}")
        if image_ids is not None:
            if key not in image_ids:
                raise ValueError(f"image {key!r} is missing from image_ids")
            out_id = image_ids[key]
        else:
            out_id = coco_image_id(key)
        records.append({"image_id": out_id, "caption": caption})
    write_json_atomic(path, records, indent=1, ensure_ascii=False)
    return records
