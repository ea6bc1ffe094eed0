"""A deterministic synthetic corpus and query set for lexical benchmarks at catalog scale.

Definition (every figure is a CorpusSpec field; the defaults are issue 17's):
- Vocabulary: `vocab_size` distinct words of 4 to 9 letters (length uniform), drawn from the 19
  consonants other than s and y. Without a vowel, an s or a y, neither Porter (ltrr's default
  stemmer) nor Snowball English (tantivy's en_stem) changes a word, and no stop word of either
  engine can occur: both engines index exactly the words written.
- Word frequencies: Zipf(`zipf_s`) over the vocabulary ranks 1..vocab_size, P(r) ∝ r^-s. Which
  word holds which rank is the draw order of the vocabulary (independent of word length).
- Document lengths: log-normal, median `median_length` tokens, sigma `length_sigma` (0.5: the
  central 95% of lengths lie in [19, 133], mean 57), rounded, at least 1.
- Queries: `n_queries` of 2 to 5 distinct words (count uniform), ranks log-uniform in
  `query_ranks` (100 to 10,000 by default: at 1,000,000 documents their document frequencies run
  from about 44,000 down to about 330), in random order.

Documents are generated in chunks of CHUNK_DOCS, chunk c from its own generator seeded with
(seed, c): document i depends only on the seed and i, so a smaller corpus is a prefix of a larger
one, and chunks can be made in any order. The corpus is streamed to a text file (one document a
line, words separated by one space) with a line-offset table beside it; FileCorpus reads it back
lazily as a Sequence of catalog entities.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from tqdm import tqdm

from core.catalog import Entity

LETTERS = b"bcdfghjklmnpqrtvwxz"
MIN_WORD_LEN = 4
MAX_WORD_LEN = 9
CHUNK_DOCS = 10_000
FIELD = "body"
DEFAULT_DOCS = 1_000_000
DEFAULT_VOCAB = 500_000
DEFAULT_ZIPF_S = 1.07
DEFAULT_MEDIAN_LENGTH = 50
DEFAULT_LENGTH_SIGMA = 0.5
DEFAULT_QUERIES = 300
DEFAULT_QUERY_RANKS = (100, 10_000)
DEFAULT_QUERY_WORDS = (2, 5)
DEFAULT_SEED = 17


@dataclass(frozen=True, kw_only=True)
class CorpusSpec:
    """Everything that defines the corpus and the queries; ranks are 1-based."""

    n_docs: int = DEFAULT_DOCS
    vocab_size: int = DEFAULT_VOCAB
    zipf_s: float = DEFAULT_ZIPF_S
    median_length: float = DEFAULT_MEDIAN_LENGTH
    length_sigma: float = DEFAULT_LENGTH_SIGMA
    n_queries: int = DEFAULT_QUERIES
    query_ranks: tuple[int, int] = DEFAULT_QUERY_RANKS
    query_words: tuple[int, int] = DEFAULT_QUERY_WORDS
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        for name in ("n_docs", "vocab_size", "n_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, but got {getattr(self, name)}")
        if not (math.isfinite(self.zipf_s) and self.zipf_s > 0):
            raise ValueError(f"`zipf_s` must be finite and > 0, but got {self.zipf_s}")
        if not (math.isfinite(self.median_length) and self.median_length >= 1):
            raise ValueError(f"`median_length` must be finite and >= 1, but got {self.median_length}")
        if not (math.isfinite(self.length_sigma) and self.length_sigma >= 0):
            raise ValueError(f"`length_sigma` must be finite and >= 0, but got {self.length_sigma}")
        lo, hi = self.query_ranks
        if not 1 <= lo <= hi <= self.vocab_size:
            raise ValueError(f"`query_ranks` must satisfy 1 <= lo <= hi <= vocab_size, but got {self.query_ranks}")
        wlo, whi = self.query_words
        if not 1 <= wlo <= whi <= hi - lo + 1:
            raise ValueError(f"`query_words` must satisfy 1 <= lo <= hi <= the band's width, "
                             f"but got {self.query_words}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "query_ranks": list(self.query_ranks), "query_words": list(self.query_words),
                "letters": LETTERS.decode(), "word_length": [MIN_WORD_LEN, MAX_WORD_LEN], "chunk_docs": CHUNK_DOCS}


def vocabulary(spec: CorpusSpec) -> list[str]:
    """The words by rank (index 0 = rank 1): `vocab_size` distinct strings of LETTERS."""
    rng = np.random.default_rng([spec.seed, 0])
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < spec.vocab_size:
        draw = 2 * (spec.vocab_size - len(words)) + 1000
        letters = np.frombuffer(LETTERS, dtype=np.uint8)[rng.integers(0, len(LETTERS), (draw, MAX_WORD_LEN))]
        lengths = rng.integers(MIN_WORD_LEN, MAX_WORD_LEN + 1, draw)
        letters[np.arange(MAX_WORD_LEN)[None, :] >= lengths[:, None]] = 0  # 'S' arrays drop trailing NULs
        for w in letters.view(f"S{MAX_WORD_LEN}").ravel().tolist():
            word = w.decode()
            if word not in seen and len(words) < spec.vocab_size:
                seen.add(word)
                words.append(word)
    return words


def zipf_pmf(spec: CorpusSpec) -> np.ndarray:
    """float64, shape (vocab_size,): P(rank r + 1), proportional to (r + 1)^-zipf_s."""
    weights = np.arange(1, spec.vocab_size + 1, dtype=np.float64) ** -spec.zipf_s
    return weights / weights.sum()


@dataclass(frozen=True)
class AliasTable:
    """Walker's alias method (Vose's construction): O(1) draws from a discrete distribution.
    prob: float64 (K,), acceptance threshold of column i; alias: int32 (K,), taken otherwise."""

    prob: np.ndarray
    alias: np.ndarray

    @classmethod
    def build(cls, pmf: np.ndarray) -> AliasTable:
        k = len(pmf)
        scaled = pmf * k
        prob = np.ones(k, dtype=np.float64)
        alias = np.arange(k, dtype=np.int32)
        small = np.flatnonzero(scaled < 1.0).tolist()
        large = np.flatnonzero(scaled >= 1.0).tolist()
        work = scaled.tolist()
        while small and large:
            s, g = small.pop(), large.pop()
            prob[s], alias[s] = work[s], g
            work[g] -= 1.0 - work[s]
            (small if work[g] < 1.0 else large).append(g)
        return cls(prob, alias)  # leftovers keep prob 1: rounding residue only

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """int32, shape (n,): 0-based ranks."""
        column = rng.integers(0, len(self.prob), n, dtype=np.int32)
        return np.where(rng.random(n) < self.prob[column], column, self.alias[column])


def chunk_tokens(spec: CorpusSpec, table: AliasTable, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents chunk*CHUNK_DOCS .. (chunk+1)*CHUNK_DOCS - 1 (fewer in the last chunk):
    (lengths int64 (d,), tokens int32 (lengths.sum(),): 0-based ranks, document after document)."""
    n = min(CHUNK_DOCS, spec.n_docs - chunk * CHUNK_DOCS)
    if n <= 0:
        raise ValueError(f"`chunk` must be < {math.ceil(spec.n_docs / CHUNK_DOCS)}, but got {chunk}")
    rng = np.random.default_rng([spec.seed, 1, chunk])
    # A whole chunk is always drawn, then cut: the draws must not depend on how many are kept.
    lengths = np.maximum(np.rint(rng.lognormal(math.log(spec.median_length), spec.length_sigma, CHUNK_DOCS)), 1)
    lengths = lengths.astype(np.int64)
    tokens = table.sample(rng, int(lengths.sum()))
    return lengths[:n], tokens[:int(lengths[:n].sum())]


class Renderer:
    """Turns token ranks into text bytes with NumPy gathers (no per-word Python)."""

    def __init__(self, words: Sequence[str]) -> None:
        encoded = [w.encode() for w in words]
        self.lens = np.array([len(w) for w in encoded], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lens)[:-1]]).astype(np.int64)
        self.blob = np.frombuffer(b"".join(encoded) + b" \n", dtype=np.uint8)

    def render(self, lengths: np.ndarray, tokens: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(the documents as lines, words joined by b" ", each ending in b"\\n"; int64 (d,) bytes per line)."""
        width = self.lens[tokens] + 1  # the word and its separator
        end = np.cumsum(width)
        src = np.repeat(self.starts[tokens] - (end - width), width) + np.arange(end[-1], dtype=np.int64)
        src[end - 1] = len(self.blob) - 2  # b" "
        src[end[np.cumsum(lengths) - 1] - 1] = len(self.blob) - 1  # b"\n" after a document's last word
        return self.blob[src].tobytes(), np.add.reduceat(width, np.concatenate([[0], np.cumsum(lengths)[:-1]]))


def write_corpus(spec: CorpusSpec, path: Path, *, progress: bool = True) -> int:
    """Stream the corpus to `path` (text) and its line offsets to `offsets_path(path)` (int64
    (n_docs + 1,)); returns the text's size in bytes. Holds one chunk at a time."""
    table = AliasTable.build(zipf_pmf(spec))
    renderer = Renderer(vocabulary(spec))
    offsets = np.zeros(spec.n_docs + 1, dtype=np.int64)
    n_chunks = math.ceil(spec.n_docs / CHUNK_DOCS)
    with path.open("wb") as f, tqdm(total=spec.n_docs, desc="corpus", unit="doc", disable=not progress) as bar:
        for chunk in range(n_chunks):
            lengths, tokens = chunk_tokens(spec, table, chunk)
            text, line_bytes = renderer.render(lengths, tokens)
            f.write(text)
            first = chunk * CHUNK_DOCS
            offsets[first + 1:first + 1 + len(lengths)] = offsets[first] + np.cumsum(line_bytes)
            bar.update(len(lengths))
    np.save(offsets_path(path), offsets)
    return int(offsets[-1])


def offsets_path(path: Path) -> Path:
    return path.with_name(path.name + ".offsets.npy")


def make_queries(spec: CorpusSpec, words: Sequence[str]) -> list[str]:
    """`n_queries` texts of distinct words whose ranks are log-uniform in `query_ranks`."""
    rng = np.random.default_rng([spec.seed, 2])
    lo, hi = spec.query_ranks
    out = []
    for _ in range(spec.n_queries):
        want = int(rng.integers(spec.query_words[0], spec.query_words[1] + 1))
        ranks: list[int] = []
        while len(ranks) < want:
            r = min(int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))), hi)
            if r not in ranks:
                ranks.append(r)
        out.append(" ".join(words[r - 1] for r in ranks))
    return out


def entity_id(i: int) -> str:
    return f"d{i}"


class FileCorpus(Sequence[Entity]):
    """The corpus file written by write_corpus as catalog entities (id "d<i>", one text field
    FIELD), read lazily: iteration streams the file, indexing seeks through the offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets = np.load(offsets_path(path), mmap_mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[Entity]:
        with self.path.open(encoding="ascii") as f:
            for i, line in enumerate(f):
                yield Entity(id=entity_id(i), fields={FIELD: line[:-1]})

    @overload
    def __getitem__(self, i: int) -> Entity: ...

    @overload
    def __getitem__(self, i: slice) -> list[Entity]: ...

    def __getitem__(self, i: int | slice) -> Entity | list[Entity]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for {len(self)} documents")
        i %= len(self)
        with self.path.open("rb") as f:
            f.seek(int(self.offsets[i]))
            line = f.read(int(self.offsets[i + 1] - self.offsets[i]))
        return Entity(id=entity_id(i), fields={FIELD: line[:-1].decode("ascii")})
