"""The broker's view of the live catalog: the entity table its rankers read and Feedback checks,
following the catalog log (core.catalog_log).

A LiveTable is immutable: `applied(records)` returns a new one, so the broker builds it off the
event loop and swaps one reference (a search holds the old table or the new one, never a mix).
Its table is a LayeredTable: the offline catalog's EntityTable (`base`, never analysed again)
under a small EntityTable of the entities written since (`top`, their current content), with the
base rows of ids written since hidden. Applying a batch analyses only its entities (the top's
unchanged rows are reused), so a write costs O(entities written) and not O(catalog); once the top
holds more than FOLD_FRACTION of the base (at least MIN_FOLD entities) it is folded into a new base.
Rows: the base's, then len(base) + the top's, so a row is a catalog position for the partition
merge's tie-break. `deleted`: ids whose newest applied write is a delete; searches drop them from
every strategy's list (`drop_deleted`) until every shard has applied the delete too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.catalog import Entity
from core.catalog_log import CatalogRecord
from core.merge import StrategyList
from core.pipeline import Answer
from core.ranking import MATCH_FIELDS, EntityTable, LambdaMartRanker, Ranker

FOLD_FRACTION = 0.125
MIN_FOLD = 2048


class _Positions(Mapping[str, int]):
    """Entity id -> row of a LayeredTable (read-only)."""

    def __init__(self, table: LayeredTable) -> None:
        self.table = table

    def __getitem__(self, entity_id: str) -> int:
        row = self.table.row(entity_id)
        if row < 0:
            raise KeyError(entity_id)
        return row

    def __contains__(self, entity_id: object) -> bool:
        return isinstance(entity_id, str) and self.table.row(entity_id) >= 0

    def __iter__(self) -> Iterator[str]:
        t = self.table
        yield from (e for e in t.base.ids if e not in t.hidden)
        yield from t.top.ids

    def __len__(self) -> int:
        return self.table.size


@dataclass(frozen=True)
class LayeredTable:
    """A core.ranking.FeatureTable: `top` over `base` with the base rows of `hidden` ids left out
    (module docstring). hidden: base ids written since (deleted, or their content is in top)."""

    base: EntityTable
    top: EntityTable
    hidden: frozenset[str]
    popularity: np.ndarray = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "popularity", np.concatenate([self.base.popularity, self.top.popularity]))
        base = self.base.positions
        object.__setattr__(self, "size", len(base) - sum(1 for e in self.hidden if e in base) + len(self.top.ids))

    @property
    def positions(self) -> Mapping[str, int]:
        return _Positions(self)

    def row(self, entity_id: str) -> int:
        top = self.top.row(entity_id)
        if top >= 0:
            return len(self.base.ids) + top
        return -1 if entity_id in self.hidden else self.base.row(entity_id)

    def rows(self, entity_ids: Sequence[str]) -> np.ndarray:
        """The rows of many ids at once (a search ranks a few hundred): the base's lookup alone
        while nothing was written since the base, else both tables' and the hidden ids'."""
        rows = self.base.rows(entity_ids)
        if not self.top.ids and not self.hidden:
            return rows
        if self.hidden:
            hidden = self.hidden
            rows[np.fromiter((e in hidden for e in entity_ids), dtype=bool, count=len(rows))] = -1
        top = self.top.rows(entity_ids)
        return np.where(top >= 0, len(self.base.ids) + top, rows)

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows as base rows and as top rows (-1 where a row is in the other table or none)."""
        n = len(self.base.ids)
        return np.where(rows < n, rows, -1), np.where(rows >= n, rows - n, -1)

    def recordings(self, entity_ids: Sequence[str]) -> list[str]:
        n, base, top = len(self.base.ids), self.base.recording_keys, self.top.recording_keys
        return [top[r - n] if r >= n else base[r] if r >= 0 else "" for r in self.rows(entity_ids).tolist()]

    def match_fractions(self, query_terms: frozenset[str], rows: np.ndarray) -> np.ndarray:
        base, top = self._split(rows)
        return self.base.match_fractions(query_terms, base) + self.top.match_fractions(query_terms, top)

    def exact_matches(self, key: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        title, artist = np.zeros(len(rows), dtype=bool), np.zeros(len(rows), dtype=bool)
        for table, part in zip((self.base, self.top), self._split(rows), strict=True):
            if table.ids:  # an empty EntityTable has no row to index, even for -1
                t, a = table.exact_matches(key, part)
                title, artist = title | t, artist | a
        return title, artist

    def analyze(self, text: str) -> list[str]:
        return self.base.analyze(text)


@dataclass(frozen=True, kw_only=True)
class LiveTable:
    """base: the offline catalog (then the last fold); top: the live entities written since, by id,
    in write order; table: their LayeredTable; deleted: ids deleted by the log and not upserted
    since; position: the newest catalog log position applied (0: the offline catalog alone);
    written: ids written since the offline catalog, one set that the tables following one another
    share and grow (copying it for every batch cost O(every write so far)); read only its size, of
    the newest table, which may count a batch being applied before `position` does."""

    base: Sequence[Entity]
    top: Mapping[str, Entity]
    table: LayeredTable
    deleted: frozenset[str] = frozenset()
    position: int = 0
    written: set[str] = field(default_factory=set)

    @classmethod
    def from_entities(cls, entities: Iterable[Entity]) -> LiveTable:
        base = tuple(entities)
        table = EntityTable.from_entities(base)
        return cls(base=base, top={}, table=LayeredTable(table, EntityTable.from_entities([], table.analyzer),
                                                         frozenset()))

    def applied(self, records: Sequence[CatalogRecord]) -> LiveTable:
        """This table with the records after `position` applied in order (earlier ones are passed
        over: a record is applied once however often it is read)."""
        fresh = [r for r in records if r.position > self.position]
        if not fresh:
            return self
        top, deleted = dict(self.top), set(self.deleted)
        changed: dict[str, Entity] = {}
        for record in fresh:
            write = record.write
            top.pop(write.entity_id, None)  # a re-written id moves to the end, as a new ordinal
            changed.pop(write.entity_id, None)
            if write.entity is None:
                deleted.add(write.entity_id)
            else:
                top[write.entity_id] = changed[write.entity_id] = write.entity
                deleted.discard(write.entity_id)
        layered = self.table
        # base rows these records replace or delete (ids folded into the base earlier stay visible)
        hidden = layered.hidden | {r.write.entity_id for r in fresh if r.write.entity_id in layered.base.positions}
        # ids new to the top are appended (O(batch)); a batch re-writing or deleting one rebuilds it
        fresh_top = not any(r.write.entity_id in self.top for r in fresh)
        top_table = layered.top.extended(list(changed.values())) if fresh_top else rebuilt(
            layered.top, list(top.values()), changed)
        written = self.written
        out = LiveTable(base=self.base, top=top, table=LayeredTable(layered.base, top_table, frozenset(hidden)),
                        deleted=frozenset(deleted), position=fresh[-1].position, written=written)
        written.update(r.write.entity_id for r in fresh)
        return out.folded() if len(top) > max(MIN_FOLD, FOLD_FRACTION * len(self.base)) else out

    def folded(self) -> LiveTable:
        """The same catalog with the top folded into a new base (one O(catalog) rebuild)."""
        t = self.table
        base = [e for e in self.base if e.id not in t.hidden] + list(self.top.values())
        # no base row hidden (only new ids written): the top's rows go under the base as they are
        table = t.base.joined(t.top) if not t.hidden else rebuilt(t.base, base, self.top)
        return LiveTable(base=base, top={}, table=LayeredTable(table, EntityTable.from_entities([], table.analyzer),
                                                               frozenset()),
                         deleted=self.deleted, position=self.position, written=self.written)


def rebuilt(old: EntityTable, entities: Sequence[Entity], changed: Mapping[str, Entity]) -> EntityTable:
    """The EntityTable of `entities`: rows of ids not in `changed` copied from `old`, the others analysed."""
    new = EntityTable.from_entities(changed.values(), old.analyzer)
    sources = [(new, new.positions[e.id]) if e.id in changed else (old, old.positions[e.id]) for e in entities]
    return EntityTable(
        ids=tuple(e.id for e in entities),
        popularity=np.array([e.popularity for e in entities], dtype=np.float64),
        terms={f: tuple(t.terms[f][r] for t, r in sources) for f in MATCH_FIELDS},
        title_keys=tuple(t.title_keys[r] for t, r in sources),
        artist_keys=tuple(t.artist_keys[r] for t, r in sources),
        recording_keys=tuple(t.recording_keys[r] for t, r in sources),
        analyzer=old.analyzer)


def with_table(ranker: Ranker, table: LayeredTable) -> Ranker:
    """The same ranker reading `table` (a ranker without a table is returned as it is)."""
    if isinstance(ranker, LambdaMartRanker):
        return LambdaMartRanker(ranker.booster, table)
    if dataclasses.is_dataclass(ranker) and any(f.name == "table" for f in dataclasses.fields(ranker)):
        return dataclasses.replace(ranker, table=table)
    return ranker


def drop_deleted(answers: Sequence[Answer], deleted: frozenset[str]) -> list[Answer]:
    """The answers with every deleted id taken out of their lists (ranks close up)."""
    if not deleted:
        return list(answers)
    out = []
    for answer in answers:
        hits = answer.hits
        if hits is not None and not deleted.isdisjoint(hits.entity_ids):
            keep = [i for i, e in enumerate(hits.entity_ids) if e not in deleted]
            hits = StrategyList(hits.strategy, [hits.entity_ids[i] for i in keep], hits.scores[keep])
            answer = dataclasses.replace(answer, hits=hits)
        out.append(answer)
    return out
