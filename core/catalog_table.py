"""The broker's view of the live catalog: the entity table its rankers read and Feedback checks,
following the catalog log (core.catalog_log).

A LiveTable is immutable: `applied(records)` returns a new one, so the broker builds it off the
event loop and swaps one reference (a search holds the old table or the new one, never a mix).
The entity table is rebuilt with only the written entities analysed again (the others' rows are
reused); its rows are the live entities in catalog order (the base catalog's order, then new ids in
write order), so a row stays a catalog position for the partition merge's tie-break. `deleted` is
the ids whose newest applied write is a delete: searches drop them from every strategy's list
(`drop_deleted`) until every shard has applied the delete too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.catalog import Entity
from core.catalog_log import CatalogRecord
from core.merge import StrategyList
from core.pipeline import Answer
from core.ranking import MATCH_FIELDS, EntityTable, LambdaMartRanker, Ranker


@dataclass(frozen=True, kw_only=True)
class LiveTable:
    """entities: the live catalog by id, in catalog order; table: its EntityTable (same order);
    deleted: ids deleted by the log and not upserted since; position: the newest catalog log
    position applied (0: the offline catalog alone); written: ids written since the offline catalog."""

    entities: Mapping[str, Entity]
    table: EntityTable
    deleted: frozenset[str] = frozenset()
    position: int = 0
    written: frozenset[str] = frozenset()

    @classmethod
    def from_entities(cls, entities: Iterable[Entity]) -> LiveTable:
        ents = list(entities)
        return cls(entities={e.id: e for e in ents}, table=EntityTable.from_entities(ents))

    def applied(self, records: Sequence[CatalogRecord]) -> LiveTable:
        """This table with the records after `position` applied in order (earlier ones are passed
        over: a record is applied once however often it is read)."""
        fresh = [r for r in records if r.position > self.position]
        if not fresh:
            return self
        entities, deleted = dict(self.entities), set(self.deleted)
        changed: dict[str, Entity] = {}
        for record in fresh:
            write = record.write
            if write.entity is None:
                entities.pop(write.entity_id, None)
                changed.pop(write.entity_id, None)
                deleted.add(write.entity_id)
            else:
                entities[write.entity_id] = changed[write.entity_id] = write.entity
                deleted.discard(write.entity_id)
        return LiveTable(entities=entities, table=_rebuilt(self.table, list(entities.values()), changed),
                         deleted=frozenset(deleted), position=fresh[-1].position,
                         written=self.written | {r.write.entity_id for r in fresh})


def _rebuilt(old: EntityTable, entities: Sequence[Entity], changed: Mapping[str, Entity]) -> EntityTable:
    """The EntityTable of `entities`: rows of unchanged ids copied from `old`, the others analysed."""
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


def with_table(ranker: Ranker, table: EntityTable) -> Ranker:
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
