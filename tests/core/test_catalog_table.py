"""The broker's live table: writes applied in log order, rows reused for unchanged entities and
equal to a fresh table of the final catalog, deleted ids dropped from strategy lists."""

from __future__ import annotations

import numpy as np

from core.catalog import Entity
from core.catalog_log import CatalogRecord, CatalogWrite
from core.catalog_table import LiveTable, drop_deleted, with_table
from core.merge import StrategyList
from core.pipeline import Answer, CallStatus
from core.ranking import BlendRanker, EntityTable, RRFRanker
from tests.conftest import synthetic_catalog


def records(*writes: CatalogWrite, start: int = 1) -> list[CatalogRecord]:
    return [CatalogRecord(start + i, w) for i, w in enumerate(writes)]


def same_table(a: EntityTable, b: EntityTable) -> bool:
    return (a.ids == b.ids and np.array_equal(a.popularity, b.popularity) and a.terms == b.terms
            and (a.title_keys, a.artist_keys, a.recording_keys) == (b.title_keys, b.artist_keys, b.recording_keys))


def test_applied_writes_give_the_table_of_the_final_catalog() -> None:
    base = synthetic_catalog(50)
    changed = Entity(id=base[3].id, fields={"title": "Gold River (feat. Someone)", "artist": "artist 9"},
                     popularity=99.0)
    new = Entity(id="n1", fields={"title": "brand new", "artist": "fresh"}, popularity=1.0)
    live = LiveTable.from_entities(base).applied(records(
        CatalogWrite(changed.id, 5, changed), CatalogWrite(base[7].id, 5), CatalogWrite("n1", 5, new),
        CatalogWrite("never-there", 5)))
    final = [changed if e.id == changed.id else e for e in base if e.id != base[7].id] + [new]
    assert same_table(live.table, EntityTable.from_entities(final))
    assert live.position == 4 and live.deleted == {base[7].id, "never-there"}
    assert live.written == {changed.id, base[7].id, "n1", "never-there"}
    assert base[7].id not in live.table.positions and live.table.positions["n1"] == 49


def test_records_are_applied_once_and_an_upsert_undeletes() -> None:
    live = LiveTable.from_entities(synthetic_catalog(5)).applied(records(CatalogWrite("t0001", 2)))
    assert live.applied(records(CatalogWrite("t0001", 2))) is live  # position 1 again: already applied
    back = live.applied(records(CatalogWrite("t0001", 3, Entity(id="t0001")), start=2))
    assert not back.deleted and back.table.positions["t0001"] == 4  # back at the end, like a new id


def test_drop_deleted_closes_the_ranks() -> None:
    lst = StrategyList("lexical", ["a", "b", "c"], np.array([3.0, 2.0, 1.0], dtype=np.float32))
    answers = [Answer("lexical", 3, CallStatus.OK, 1.0, lst), Answer("semantic", 0, CallStatus.SKIPPED, 0.0)]
    out = drop_deleted(answers, frozenset({"b"}))
    assert out[0].hits is not None and list(out[0].hits.entity_ids) == ["a", "c"]
    assert out[0].hits.scores.tolist() == [3.0, 1.0] and out[1] is answers[1]
    assert drop_deleted(answers, frozenset({"z"}))[0] is answers[0]


def test_with_table_swaps_the_rankers_table() -> None:
    old, new = (EntityTable.from_entities(synthetic_catalog(n)) for n in (3, 4))
    assert with_table(BlendRanker(table=old, title_weight=0.5), new) == BlendRanker(table=new, title_weight=0.5)
    rrf = RRFRanker()
    assert with_table(rrf, new) is rrf
