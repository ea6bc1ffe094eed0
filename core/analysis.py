"""Text analysis: the same pipeline at index and at query time.

Pipeline, in order (each step configurable per field through AnalyzerConfig):
1. Unicode NFKC normalisation (full-width forms, ligatures and compatibility characters fold).
2. Case folding (str.casefold: "Straße" -> "strasse").
3. Accent folding (NFD, combining marks dropped: "Beyoncé" -> "beyonce").
4. Tokenisation: runs of letters and digits (Unicode \\w) split as Lucene's StandardTokenizer
   does (see _TOKEN); the English possessive "'s" is removed, as in EnglishPossessiveFilter.
5. Stop words removed (default: Lucene's English list, 33 words).
6. Snowball stemming with PyStemmer (default: "porter", the algorithm of Lucene's PorterStemFilter,
   so BM25 figures are comparable with Anserini's).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

import Stemmer

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET.
LUCENE_ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)
STOPWORD_LISTS: dict[str, frozenset[str]] = {"english": LUCENE_ENGLISH_STOPWORDS, "none": frozenset()}
DEFAULT_STEMMER = "porter"
DEFAULT_MAX_TOKEN_CHARS = 255
_APOSTROPHES = "'\u2019"
# Approximates Unicode word segmentation (UAX #29, as Lucene's StandardTokenizer): letters join
# across an inner apostrophe, period or colon ("don't", "u.s.a"), digits also across "," and ";"
# ("1,000", "1.5").
_TOKEN = re.compile(rf"\w+(?:(?:[{_APOSTROPHES}.:]|(?<=\d)[,;](?=\d))\w+)*")


@dataclass(frozen=True, kw_only=True)
class AnalyzerConfig:
    """How one field's text (and the query, for that field) becomes terms.

    stemmer: a PyStemmer algorithm name ("porter", "english", "french", ...) or "none".
    stopwords: a name in STOPWORD_LISTS ("english", "none").
    max_token_chars: longer tokens are dropped (Lucene's StandardTokenizer limit is 255).
    """

    casefold: bool = True
    fold_accents: bool = True
    stopwords: str = "english"
    stemmer: str = DEFAULT_STEMMER
    max_token_chars: int = DEFAULT_MAX_TOKEN_CHARS

    def __post_init__(self) -> None:
        if self.stopwords not in STOPWORD_LISTS:
            raise ValueError(f"`stopwords` must be one of {sorted(STOPWORD_LISTS)}, but got {self.stopwords!r}")
        if self.stemmer != "none" and self.stemmer not in Stemmer.algorithms():
            raise ValueError(f"`stemmer` must be 'none' or one of {Stemmer.algorithms()}, but got {self.stemmer!r}")
        if self.max_token_chars < 1:
            raise ValueError(f"`max_token_chars` must be >= 1, but got {self.max_token_chars}")

    def to_dict(self) -> dict[str, object]:
        return {"casefold": self.casefold, "fold_accents": self.fold_accents, "stopwords": self.stopwords,
                "stemmer": self.stemmer, "max_token_chars": self.max_token_chars}


def normalize(text: str, *, casefold: bool = True, fold_accents: bool = True) -> str:
    """Steps 1-3 of the pipeline: NFKC, case folding, accent folding."""
    text = unicodedata.normalize("NFKC", text)
    if casefold:
        text = text.casefold()
    if fold_accents and not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
        text = unicodedata.normalize("NFC", text)
    return text


def tokenize(text: str, max_token_chars: int = DEFAULT_MAX_TOKEN_CHARS) -> list[str]:
    """Step 4: word tokens of already normalised text, possessive 's removed."""
    out = []
    for tok in _TOKEN.findall(text):
        if tok.endswith(("'s", "\u2019s")):
            tok = tok[:-2]
        if 0 < len(tok) <= max_token_chars:
            out.append(tok)
    return out


def text_key(text: str) -> str:
    """The one normalised key of a text, for exact-match lookups: steps 1-4 of the pipeline with
    the defaults (NFKC, case folding, accent folding, tokenisation), the words joined by single
    spaces. Stop words and inflections are kept, so the key stays readable and specific.

    The query memory stores queries under it, the policy's query history keys on it, the attribute
    vocabulary matches value names in it, and ranking's `title_exact` compares titles by it.
    Examples: "  Taylor   SWIFT! " -> "taylor swift"; "Beyoncé" -> "beyonce";
    "The Beatles's  Song" -> "the beatles song"; "!!!" -> "".
    """
    return " ".join(tokenize(normalize(text)))


@dataclass(frozen=True)
class Analyzer:
    """A compiled AnalyzerConfig. Not thread-safe (PyStemmer stemmers keep a cache): one per thread."""

    config: AnalyzerConfig = field(default_factory=AnalyzerConfig)

    @cached_property
    def _stopwords(self) -> frozenset[str]:
        return STOPWORD_LISTS[self.config.stopwords]

    @cached_property
    def _stemmer(self) -> Stemmer.Stemmer | None:
        return None if self.config.stemmer == "none" else Stemmer.Stemmer(self.config.stemmer)

    def __call__(self, text: str) -> list[str]:
        """Terms of `text`, in order, repeats kept."""
        c = self.config
        tokens = tokenize(normalize(text, casefold=c.casefold, fold_accents=c.fold_accents), c.max_token_chars)
        stop = self._stopwords
        if stop:
            tokens = [t for t in tokens if t not in stop]
        stemmer = self._stemmer
        return stemmer.stemWords(tokens) if stemmer is not None and tokens else tokens
