"""Analysis and posting construction for the lexical index build.

analyse() turns the entities' text fields into flat postings, one list per term, with one term
frequency per field. Fields are partitioned into vocabulary groups: the fields of one group share
one vocabulary (one analyzer configuration), so a term of that group carries a frequency in each
of its fields; a term of one group never has a frequency in another group's fields.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from core.analysis import Analyzer
from core.catalog import Entity

if TYPE_CHECKING:  # index.py imports this module: no import cycle at run time
    from core.lexical.config import FieldSpec


@dataclass(frozen=True)
class Postings:
    """Flat postings of every term.

    terms: one list per vocabulary group, each sorted; the global term id runs group after group,
        the position in its group's sorted list (T = total terms).
    offsets: int64 (T + 1,), term t's postings are offsets[t]:offsets[t + 1].
    doc_ids: uint32 (P,), ascending within each term.
    tfs: uint32 (F, P), the posting term's frequency in field f (0 where the document lacks it there).
    lengths: uint32 (F, N), terms per field and document after analysis (stop words removed).
    """

    terms: list[list[str]]
    offsets: np.ndarray
    doc_ids: np.ndarray
    tfs: np.ndarray
    lengths: np.ndarray


def check_groups(groups: Sequence[Sequence[int]], n_fields: int) -> None:
    """Raise ValueError unless `groups` is a partition of range(n_fields) into non-empty groups."""
    flat = sorted(f for g in groups for f in g)
    if flat != list(range(n_fields)) or any(len(g) == 0 for g in groups):
        raise ValueError(f"`groups` must partition the field indices 0..{n_fields - 1} into non-empty groups, "
                         f"but got {[list(g) for g in groups]}")


def analyse(entities: Sequence[Entity], fields: Sequence[FieldSpec], groups: Sequence[Sequence[int]],
            *, progress: bool = True, workers: int = 1) -> Postings:
    """Analyse field f of every entity (text entity.fields.get(fields[f].name, "")) with
    fields[f].analyzer and collect the postings of every term, group by group (see Postings)."""
    n_fields = len(fields)
    check_groups(groups, n_fields)
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1, but got {workers}")
    group_of = {f: g for g, members in enumerate(groups) for f in members}
    analyzers = [Analyzer(spec.analyzer) for spec in fields]
    vocab: list[dict[str, int]] = [{} for _ in groups]
    # One row per (document, field, term): the group-local term id, the document, the field, the tf.
    rows: list[tuple[int, int, int, int, int]] = []
    lengths = np.zeros((n_fields, len(entities)), dtype=np.uint32)
    for d, e in enumerate(tqdm(entities, desc="lexical: analysing", unit="doc", disable=not progress)):
        for f, spec in enumerate(fields):
            terms = analyzers[f](e.fields.get(spec.name, ""))
            lengths[f, d] = len(terms)
            g = group_of[f]
            for term, tf in Counter(terms).items():
                rows.append((g, vocab[g].setdefault(term, len(vocab[g])), d, f, tf))
    return _collect(rows, vocab, lengths)


def _collect(rows: list[tuple[int, int, int, int, int]], vocab: list[dict[str, int]], lengths: np.ndarray
             ) -> Postings:
    names = [sorted(v) for v in vocab]
    bases = np.cumsum([0] + [len(v) for v in vocab]).astype(np.int64)
    remap = np.zeros(int(bases[-1]), dtype=np.int64)
    for g, sorted_names in enumerate(names):
        for new_id, name in enumerate(sorted_names):
            remap[bases[g] + vocab[g][name]] = bases[g] + new_id
    n_fields, n_docs = lengths.shape
    table = np.array(rows, dtype=np.int64).reshape(-1, 5)
    term = remap[bases[table[:, 0]] + table[:, 1]] if len(table) else np.zeros(0, dtype=np.int64)
    keys, inverse = np.unique(term * max(n_docs, 1) + table[:, 2], return_inverse=True)
    tfs = np.zeros((n_fields, keys.size), dtype=np.uint32)
    tfs[table[:, 3], inverse.reshape(-1)] = table[:, 4]
    offsets = np.zeros(int(bases[-1]) + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // max(n_docs, 1), minlength=int(bases[-1])), out=offsets[1:])
    return Postings(terms=names, offsets=offsets, doc_ids=(keys % max(n_docs, 1)).astype(np.uint32), tfs=tfs,
                    lengths=lengths)
