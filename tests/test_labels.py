"""The caption-word labeller (densprune.cluster.labels) on small synthetic captions."""

from __future__ import annotations

import re

import numpy as np

from densprune.cluster.labels import MAX_LABEL_CHARS, cluster_labels, shorten


def label_words(label: str) -> list[str]:
    return [w for w in label.split(", ") if w]


def test_labels_pick_distinctive_words():
    caps = ["red star shape"] * 5 + ["blue bird animal"] * 5 + ["red bird"]
    labels = np.array([0] * 5 + [1] * 5 + [1])
    out = cluster_labels(caps, labels, 3)
    assert label_words(out[0])[0] == "star" or "star" in out[0]
    assert "bird" in out[1] and out[2] == ""


def test_noise_tokens_are_never_words():
    """Dates, numbers, urls, e-mail addresses, file formats and 41+ character tokens are ignored."""
    blob = "x" * 41
    noise = (f"Part of the collection (Wed Aug 25 23:29:46 2004) http://aiga.org/signs/a.html eps svg png "
             f"jean.victor@gmail.com 2004 fc23 0x89c79 {blob} {'y' * 200_000}")
    caps = [f"penguin {noise}"] * 4 + [f"lizard {noise}"] * 4  # only a caption's start is read
    out = cluster_labels(caps, np.array([0] * 4 + [1] * 4), 2, top=3)
    for lab in out:
        for w in label_words(lab):
            assert w not in {"wed", "aug", "http", "aiga", "org", "html", "eps", "svg", "png", "gmail", "com",
                             "jean", "victor", "fc", "collection", "part"} or w in {"collection", "part"}
            assert len(w) <= 40 and not re.search(r"\d", w)
            assert w not in (blob, "y" * 200_000)
    assert out[0].startswith("penguin") and out[1].startswith("lizard")


def test_words_spread_over_most_concepts_are_dropped():
    """'computer' is in every concept (and the most frequent word of each): it names none of them."""
    things = ["apple", "boat", "cloud", "drum", "eagle", "flute"]
    caps, labels = [], []
    for j, t in enumerate(things):
        caps += [f"computer computer computer {t} icon{j}"] * 6
        labels += [j] * 6
    out = cluster_labels(caps, np.array(labels), len(things), top=2)
    assert [label_words(x)[0] for x in out] == things
    assert all("computer" not in x for x in out)


def test_labels_are_short():
    words = ["supercalifragilistic", "antidisestablishment", "floccinaucinihilipil", "pneumonoultramicros"]
    caps = [" ".join(words)] * 3 + ["short words only"] * 3
    out = cluster_labels(caps, np.array([0] * 3 + [1] * 3), 2, top=4)
    assert all(len(x) <= MAX_LABEL_CHARS for x in out)
    assert out[0] == "antidisestablishment" or len(label_words(out[0])) >= 1


def test_duplicate_labels_are_told_apart_by_second_best_words():
    """Three concepts about stars: 'star' leads each label, and a second word tells them apart."""
    caps, labels = [], []
    for j, colour in enumerate(["red", "blue", "gold"]):
        caps += ["star"] * 8 + [colour]
        labels += [j] * 9
    caps += ["tree leaf"] * 5
    labels += [3] * 5
    out = cluster_labels(caps, np.array(labels), 4, top=1)
    assert cluster_labels(caps, np.array(labels), 4, top=1, max_chars=4)[:3] == ["star"] * 3  # no room
    assert len(set(out)) == 4, out
    assert out[:3] == ["star, red", "star, blue", "star, gold"]


def test_identical_text_may_share_a_label():
    caps = ["star shape"] * 10 + ["tree leaf"] * 5
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5)
    out = cluster_labels(caps, labels, 3)
    assert out[0] == out[1] and out[0] != out[2]


def test_shorten():
    assert shorten("a b c", 10) == "a b c"
    assert shorten("one two three four", 10) == "one two\u2026"
    assert len(shorten("z" * 500, 60)) <= 60
    assert shorten(None) == ""


def test_plural_forms_count_once_in_a_label():
    caps = ["stars star shapes star"] * 4 + ["tree leaf"] * 4
    out = cluster_labels(caps, np.array([0] * 4 + [1] * 4), 2, top=3)
    assert out[0] in ("star, shapes", "stars, shapes", "shapes, star", "shapes, stars"), out[0]
