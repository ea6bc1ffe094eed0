"""Typing noise for simulated queries: the ways people mistype what they want.

Each function takes the text and a numpy Generator and is deterministic given both.

- `typo`: one edit in one word of at least `min_chars` letters, the operation drawn uniformly from
  substitution (by a keyboard neighbour), deletion, insertion (a doubled letter) and transposition
  of adjacent letters, the classic four of Damerau (1964), which cover about 80% of misspellings.
  The first letter is kept: people rarely get it wrong, and the attribute strategy's fuzzy index
  (one edit) can then still read "tayler" as "taylor".
- `drop_word`: removes one word of a text of two or more words.
- `prefix`: the first 1..n-1 words (a partial title).
"""

from __future__ import annotations

import numpy as np

# QWERTY neighbours, for substitutions that look like slips of the finger.
_NEIGHBOURS = {
    "a": "qwsz", "b": "vghn", "c": "xdfv", "d": "serfcx", "e": "wsdr", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "i": "ujko", "j": "huikmn", "k": "jiolm", "l": "kop", "m": "njk", "n": "bhjm",
    "o": "iklp", "p": "ol", "q": "wa", "r": "edft", "s": "awedxz", "t": "rfgy", "u": "yhji",
    "v": "cfgb", "w": "qase", "x": "zsdc", "y": "tghu", "z": "asx",
}
DEFAULT_MIN_CHARS = 4


def _edit(word: str, rng: np.random.Generator) -> str:
    op = int(rng.integers(4))
    i = int(rng.integers(1, len(word)))  # never the first letter
    c = word[i].lower()
    if op == 0 and c in _NEIGHBOURS:
        alts = _NEIGHBOURS[c]
        return word[:i] + alts[int(rng.integers(len(alts)))] + word[i + 1:]
    if op == 1:
        return word[:i] + word[i + 1:]
    if op == 2:
        return word[:i] + word[i] + word[i:]
    if i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:]


def typo(text: str, rng: np.random.Generator, min_chars: int = DEFAULT_MIN_CHARS) -> str:
    """`text` with one edit in one of its words of >= min_chars letters (unchanged when none)."""
    words = text.split()
    eligible = [i for i, w in enumerate(words) if len(w) >= min_chars and w.isalpha()]
    if not eligible:
        return text
    k = eligible[int(rng.integers(len(eligible)))]
    words[k] = _edit(words[k], rng)
    return " ".join(words)


def drop_word(text: str, rng: np.random.Generator) -> str:
    """`text` without one of its words (unchanged when it has fewer than two)."""
    words = text.split()
    if len(words) < 2:
        return text
    del words[int(rng.integers(len(words)))]
    return " ".join(words)


def prefix(text: str, rng: np.random.Generator) -> str:
    """The first 1..n-1 words of `text` (unchanged when it has fewer than two)."""
    words = text.split()
    if len(words) < 2:
        return text
    return " ".join(words[:int(rng.integers(1, len(words)))])
