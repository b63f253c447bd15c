"""Readable concept labels from captions: the most distinctive words of each cluster (class-based TF-IDF).

Any source's captions can be noisy: credits, collection boilerplate, dates, urls, file names, a 200 kB
paste. The labeller only counts words that can name something:

- letters only, 3 to ``MAX_TOKEN_CHARS`` (40) characters: numbers, codes with digits (``fc23``), two-letter
  abbreviations (``bb``, ``fs``) and runaway tokens are never words; urls and e-mail addresses are removed
  before tokenising;
- not an English stop word, a month or weekday name (dates), or a file format / extension (``svg``,
  ``eps``, ``png``...);
- not spread over most concepts: a word present in more than ``max_concept_share`` of the non-empty
  concepts says nothing about any one of them (only applied from ``MIN_CONCEPTS_FOR_SPREAD`` concepts).

Each concept gets its ``top`` words by c-TF-IDF (BERTopic's class-based TF-IDF: the word's share of
the concept's words times ``log(1 + A / f_w)``, A the mean number of words per concept, f_w the word's
count over all concepts), joined by ", " within ``max_chars`` (40) characters. Concepts that would share
a label get the best word that tells each apart from its namesakes in second place, until the labels
differ or their word counts are identical (truly the same text, e.g. 1,000 copies of one caption split
over several clusters).
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

MAX_TOKEN_CHARS = 40  # longer "words" are pasted blobs, hashes or urls, never names
MAX_LABEL_CHARS = 40
MAX_CAPTION_CHARS = 2_000  # only the start of a caption is read: labels need a few words, not a 200 kB paste
MIN_CONCEPTS_FOR_SPREAD = 5
MIN_TOKEN_CHARS = 3  # two-letter tokens are mostly file-name abbreviations ("bb", "fs", "gg")
TOKEN_PATTERN = rf"(?u)\b[^\W\d_]{{{MIN_TOKEN_CHARS},{MAX_TOKEN_CHARS}}}\b"

_URL_RE = re.compile(r"(?:https?://|ftp://|www\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b[\w-]+(?:\.[\w-]+)*\."
                     r"(?:org|com|net|edu|gov|io|de|fr|es|it|uk)\b(?:/\S*)?", re.I)
DATE_WORDS = frozenset(
    "jan feb mar apr may jun jul aug sep sept oct nov dec january february march april june july august "
    "september october november december mon tue tues wed thu thur thurs fri sat sun monday tuesday "
    "wednesday thursday friday saturday sunday am pm utc gmt cet cest pst est".split())
FILE_WORDS = frozenset(
    "svg svgz eps png jpg jpeg gif bmp tif tiff webp pdf ps ai xcf psd wmf emf ico txt html htm xml json zip "
    "tar gz http https www ftp org com net".split())


def shorten(text: str | None, limit: int = MAX_LABEL_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(str(text or "").split())
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 1)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "\u2026"


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | DATE_WORDS | FILE_WORDS


def clean_caption(caption: str | None) -> str:
    """The part of a caption the labeller reads: its start, without urls and e-mail addresses,
    underscores as spaces (``lemon_theme`` is two words)."""
    text = str(caption or "")[:MAX_CAPTION_CHARS]
    return _URL_RE.sub(" ", text).replace("_", " ")


def concept_word_counts(captions: list[str], labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Word counts per concept: (K, V) float64 and the vocabulary (V,) of words a label may use.

    captions: (N,) strings, labels: (N,) ints in [0, K).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [clean_caption(c) for c in captions]
    vec = CountVectorizer(stop_words=list(_stop_words()), token_pattern=TOKEN_PATTERN, lowercase=True,
                          max_features=50_000)
    try:
        counts = vec.fit_transform(docs)
    except ValueError:  # no word at all
        return np.zeros((k, 0)), np.asarray([], dtype=object)
    labels = np.asarray(labels, dtype=np.int64)
    onehot = sp.csr_matrix((np.ones(labels.size), (labels, np.arange(labels.size))), shape=(k, labels.size))
    per = np.asarray((onehot @ counts).todense(), dtype=np.float64)
    return per, np.asarray(vec.get_feature_names_out(), dtype=object)


def ctfidf(per: np.ndarray, max_concept_share: float = 0.5) -> np.ndarray:
    """Class-based TF-IDF of word counts per concept (K, V) -> scores (K, V), 0 for words spread over
    more than ``max_concept_share`` of the non-empty concepts (from MIN_CONCEPTS_FOR_SPREAD of them)."""
    totals = per.sum(axis=1, keepdims=True)
    tf = per / np.maximum(totals, 1.0)
    nonempty = int((totals[:, 0] > 0).sum())
    avg_words = max(per.sum() / max(nonempty, 1), 1.0)
    score = tf * np.log1p(avg_words / np.maximum(per.sum(axis=0), 1.0))
    if nonempty >= MIN_CONCEPTS_FOR_SPREAD:
        share = (per > 0).sum(axis=0) / nonempty
        score[:, share > max_concept_share] = 0.0
    return score


def _join(words: list[str], max_chars: int) -> str:
    out: list[str] = []
    for w in words:
        if len(", ".join(out + [w])) > max_chars:
            break
        out.append(w)
    return ", ".join(out) if out else shorten(words[0], max_chars) if words else ""


def _singular(word: str) -> str:
    """'stars' -> 'star' (not 'glass' -> 'glas'): enough to keep 'star, stars' out of one label."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _best_words(score_j: np.ndarray, vocab: np.ndarray, top: int) -> list[int]:
    """The ``top`` highest-scoring words (score > 0), one per singular form."""
    out: list[int] = []
    seen: set[str] = set()
    for b in np.argsort(-score_j, kind="stable"):
        if score_j[b] <= 0 or len(out) == top:
            break
        s = _singular(str(vocab[b]))
        if s not in seen:
            seen.add(s)
            out.append(int(b))
    return out


def _contrast_word(score: np.ndarray, j: int, others: list[int], taken: list[int],
                   singulars: np.ndarray) -> int | None:
    """The word that scores highest for concept ``j`` above every one of ``others`` (None if none does),
    not a form of a word ``j`` already has (``singulars``: (V,) singular form of each word)."""
    margin = score[j] - score[others].max(axis=0)
    margin[np.isin(singulars, singulars[taken])] = -np.inf
    margin[score[j] <= 0] = -np.inf
    best = int(np.argmax(margin))
    return best if np.isfinite(margin[best]) and margin[best] > 0 else None


def _disambiguate(words: list[list[int]], score: np.ndarray, per: np.ndarray, vocab: np.ndarray,
                  max_chars: int, rounds: int = 4) -> list[str]:
    """Labels from word indices; concepts sharing a label get a telling word in second place."""
    tf = per / np.maximum(per.sum(axis=1, keepdims=True), 1.0)
    singulars = np.asarray([_singular(str(w)) for w in vocab], dtype=object)
    labels = [_join([str(vocab[w]) for w in ws], max_chars) for ws in words]
    for _ in range(rounds):
        groups: dict[str, list[int]] = {}
        for j, lab in enumerate(labels):
            if lab:
                groups.setdefault(lab, []).append(j)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        changed = False
        for group in clashes:
            distinct = [j for j in group if not all(np.allclose(tf[j], tf[i]) for i in group if i != j)]
            for j in distinct:
                w = _contrast_word(score, j, [i for i in group if i != j], words[j], singulars)
                if w is None:
                    continue
                words[j] = words[j][:1] + [w] + words[j][1:]
                labels[j] = _join([str(vocab[x]) for x in words[j]], max_chars)
                changed = True
        if not changed:
            break
    return labels


def cluster_labels(captions: list[str], labels: np.ndarray, k: int, top: int = 3, seed: int = 0,
                   max_docs: int = 200_000, max_chars: int = MAX_LABEL_CHARS,
                   max_concept_share: float = 0.5) -> list[str]:
    """A readable label per concept: its most distinctive caption words, distinct across concepts.

    captions: (N,) strings, labels: (N,) ints in [0, K) -> K strings of at most ``max_chars`` characters
    ("" where a concept has no usable word). At most ``max_docs`` captions are read (a seeded sample).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(captions)
    rows = np.arange(n)
    if n > max_docs:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_docs, replace=False))
    per, vocab = concept_word_counts([captions[i] for i in rows], labels[rows], k)
    if vocab.size == 0:
        return [""] * k
    score = ctfidf(per, max_concept_share)
    words = [_best_words(score[j], vocab, top) for j in range(k)]
    return _disambiguate(words, score, per, vocab, max_chars)


_RANK_RE = re.compile(r" - \d+ of \d+$")


def ranked_labels(labels: list[str], sizes: np.ndarray) -> list[str]:
    """Labels that single out their concept: where words cannot tell n concepts apart (the same label),
    each gets ' - i of n', i its rank by size (largest first, ties by concept id).

    labels: K strings ('' for none), sizes: (K,) members per concept -> K strings."""
    sizes = np.asarray(sizes)
    groups: dict[str, list[int]] = {}
    for j, lab in enumerate(labels):
        if lab:
            groups.setdefault(lab, []).append(j)
    out = list(labels)
    for lab, members in groups.items():
        if len(members) > 1:
            for i, j in enumerate(sorted(members, key=lambda j: (-int(sizes[j]), j))):
                out[j] = f"{lab} - {i + 1} of {len(members)}"
    return out


def strip_rank(label: str) -> str:
    """A label without the ' - i of n' of :func:`ranked_labels`."""
    return _RANK_RE.sub("", label)
