"""The broker's live table: writes applied in log order; its layered table reads (features,
recordings, positions) the same as a fresh EntityTable of the final catalog, before and after a
fold; deleted ids dropped from strategy lists."""

from __future__ import annotations

import numpy as np
import pytest

from core import catalog_table
from core.catalog import Entity
from core.catalog_log import CatalogRecord, CatalogWrite
from core.catalog_table import LayeredTable, LiveTable, drop_deleted, with_table
from core.merge import StrategyList, merge
from core.pipeline import Answer, CallStatus
from core.ranking import BlendRanker, EntityTable, FeatureTable, RRFRanker, candidate_features
from tests.conftest import synthetic_catalog


def records(*writes: CatalogWrite, start: int = 1) -> list[CatalogRecord]:
    return [CatalogRecord(start + i, w) for i, w in enumerate(writes)]


QUERIES = ("gold river", "artist 9", "brand new fresh", "love night", "")


def reads_alike(live: FeatureTable, fresh: EntityTable, ids: list[str]) -> None:
    """Every read ranking makes gives the same values for `ids` (some not in the catalog)."""
    assert [live.popularity[r] if r >= 0 else None for r in live.rows(ids).tolist()] == \
        [fresh.popularity[r] if r >= 0 else None for r in fresh.rows(ids).tolist()]
    assert live.recordings(ids) == fresh.recordings(ids)
    lst = StrategyList("lexical", ids, np.linspace(1.0, 0.0, len(ids), dtype=np.float32))
    merged = merge([lst], ("lexical",))
    for q in QUERIES:
        assert np.array_equal(candidate_features(merged, q, live), candidate_features(merged, q, fresh))
    assert sorted(live.positions) == sorted(fresh.positions) and len(live.positions) == len(fresh.positions)


def final_catalog() -> tuple[LiveTable, list[Entity]]:
    base = synthetic_catalog(50)
    changed = Entity(id=base[3].id, fields={"title": "Gold River (feat. Someone)", "artist": "artist 9"},
                     popularity=99.0)
    new = Entity(id="n1", fields={"title": "brand new", "artist": "fresh"}, popularity=1.0)
    live = LiveTable.from_entities(base).applied(records(
        CatalogWrite(changed.id, 5, changed), CatalogWrite(base[7].id, 5), CatalogWrite("n1", 5, new),
        CatalogWrite("never-there", 5)))
    final = [e for e in base if e.id not in (changed.id, base[7].id)] + [changed, new]
    return live, final


def test_applied_writes_read_as_the_final_catalog() -> None:
    live, final = final_catalog()
    fresh = EntityTable.from_entities(final)
    ids = [e.id for e in final] + ["t0007", "never-there", "nope"]
    reads_alike(live.table, fresh, ids)
    assert live.position == 4 and live.deleted == {"t0007", "never-there"}
    assert live.written == {"t0003", "t0007", "n1", "never-there"}
    assert "t0007" not in live.table.positions and live.table.positions["n1"] == 51  # after the 50 base rows
    folded = live.folded()
    assert isinstance(folded.table, LayeredTable) and not folded.top and folded.table.base.ids == fresh.ids
    reads_alike(folded.table, fresh, ids)


def test_the_top_is_folded_into_the_base_when_it_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_table, "MIN_FOLD", 3)
    live = LiveTable.from_entities(synthetic_catalog(10))
    for i in range(4):
        live = live.applied(records(CatalogWrite(f"n{i}", 1, Entity(id=f"n{i}")), start=i + 1))
    assert not live.top and live.table.base.ids[-4:] == ("n0", "n1", "n2", "n3") and live.position == 4


def test_entities_folded_into_the_base_keep_their_rows_after_more_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_table, "MIN_FOLD", 3)
    base = synthetic_catalog(10)
    live = LiveTable.from_entities(base)
    new = [Entity(id=f"n{i}", fields={"title": f"new {i}"}) for i in range(5)]
    for i, e in enumerate(new):
        live = live.applied(records(CatalogWrite(e.id, 1, e), start=i + 1))
    assert not live.top or len(live.top) == 1  # folded after the 4th write
    reads_alike(live.table, EntityTable.from_entities(base + new), [e.id for e in base + new])


def test_records_are_applied_once_and_an_upsert_undeletes() -> None:
    live = LiveTable.from_entities(synthetic_catalog(5)).applied(records(CatalogWrite("t0001", 2)))
    assert live.applied(records(CatalogWrite("t0001", 2))) is live  # position 1 again: already applied
    back = live.applied(records(CatalogWrite("t0001", 3, Entity(id="t0001")), start=2))
    assert not back.deleted and back.table.positions["t0001"] == 5  # back, after the base rows, like a new id


def test_drop_deleted_closes_the_ranks() -> None:
    lst = StrategyList("lexical", ["a", "b", "c"], np.array([3.0, 2.0, 1.0], dtype=np.float32))
    answers = [Answer("lexical", 3, CallStatus.OK, 1.0, lst), Answer("semantic", 0, CallStatus.SKIPPED, 0.0)]
    out = drop_deleted(answers, frozenset({"b"}))
    assert out[0].hits is not None and list(out[0].hits.entity_ids) == ["a", "c"]
    assert out[0].hits.scores.tolist() == [3.0, 1.0] and out[1] is answers[1]
    assert drop_deleted(answers, frozenset({"z"}))[0] is answers[0]


def test_with_table_swaps_the_rankers_table() -> None:
    old = EntityTable.from_entities(synthetic_catalog(3))
    new = LiveTable.from_entities(synthetic_catalog(4)).table
    assert with_table(BlendRanker(table=old, title_weight=0.5), new) == BlendRanker(table=new, title_weight=0.5)
    rrf = RRFRanker()
    assert with_table(rrf, new) is rrf


def test_an_extended_table_reads_as_a_fresh_table_of_all_its_entities() -> None:
    """EntityTable.extended appends rows without re-analysing the old ones: every read ranking
    makes equals a table built from scratch, including terms and keys only the new rows hold."""
    base = synthetic_catalog(40)
    new = [Entity(id=f"n{i}", fields={"title": f"brand new {i}", "artist": "fresh" if i % 2 else "artist 9",
                                      "album": "gold river"}, popularity=float(i)) for i in range(7)]
    extended = EntityTable.from_entities(base).extended(new[:3]).extended(new[3:]).extended([])
    fresh = EntityTable.from_entities(base + new)
    reads_alike(extended, fresh, [e.id for e in base + new] + ["nope"])
    assert extended.ids == fresh.ids
    with pytest.raises(ValueError, match="the new rows must have ids the table does not hold"):
        extended.extended([new[0]])
    live = LiveTable.from_entities(base).applied(records(*(CatalogWrite(e.id, 5, e) for e in new)))
    folded = live.folded()  # only new ids: the top's rows go under the base as they are
    assert not folded.table.hidden and not folded.top
    reads_alike(folded.table, fresh, [e.id for e in base + new] + ["nope"])


def test_many_batches_new_ids_then_rewrites_read_as_the_final_catalog() -> None:
    """Batches of new ids (appended to the top) and batches re-writing or deleting ids already in
    the top (rebuilt) read as the final catalog."""
    base = synthetic_catalog(30)
    live, final, position = LiveTable.from_entities(base), {e.id: e for e in base}, 0
    for batch in range(6):
        writes = [CatalogWrite(f"n{batch}-{i}", 5, Entity(id=f"n{batch}-{i}", fields={
            "title": f"song {batch} {i}", "artist": f"band {i}"}, popularity=float(i))) for i in range(4)]
        if batch >= 3:  # re-write one id of an earlier batch, delete another
            changed = Entity(id=f"n{batch - 2}-0", fields={"title": "changed title", "artist": "band x"},
                             popularity=7.0)
            writes += [CatalogWrite(changed.id, 6, changed), CatalogWrite(f"n{batch - 3}-1", 6)]
        live = live.applied(records(*writes, start=position + 1))
        position += len(writes)
        for w in writes:
            final.pop(w.entity_id, None)
            if w.entity is not None:
                final[w.entity_id] = w.entity
    fresh = EntityTable.from_entities(final.values())
    reads_alike(live.table, fresh, [*final, "n0-1", "nope"])
