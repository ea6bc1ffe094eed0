"""New releases in the music simulator: tracks that appear during a run and are wanted at once.

A run holds back `ReleaseConfig.releases` real tracks of the catalog (a seeded draw among the
tracks with a title and an artist whose recording has no other copy, so that nothing in the index
answers for them before they exist), builds the index from the rest (`Releases.base`), and
releases them during the run: release i is written at search count `first_at + i * every` into
every strategy through the live core path (core.live.LiveCollection + apply_writes with each
strategy's live writer: core.lexical.live.LiveLexicalIndex, core.semantic.live.LiveSemantic,
core.attribute.live.LiveAttribute, core.memory.live.LiveMemory), before that search is served.

Ordinals: the base in catalog order, then the releases in release order (`Releases.entities`):
the order in which the LiveCollection numbers new ids, which the world, the ranker's EntityTable
and the user model share. Releases are new ids only: LiveLexicalIndex numbers an upsert of a live
id anew, LiveCollection keeps it (NOTES: the mismatch to settle when wiring), so LexicalWriter
refuses anything but a new id whose lexical ordinal is the collection's.

Demand (release_searches): before its release a track is never a target (UserSimulator.
set_available); from its release on it is a target of the ordinary user model (its own catalog
popularity) and, release-day demand, once a first release is out each search is with probability
`share` a known-item search (UserSimulator.known_item_search: the usual title, partial, artist and
typo forms) for a released track drawn with weight exp(-age / decay), age = searches since its
release: the newest releases take most of it. The searches are drawn up front, so every plan of a
seed (static, learned, oracle) replays the same searches with the same releases at the same counts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from core.catalog import Entity
from core.collapse import recording_copies
from core.lexical.index import LexicalIndex
from core.lexical.live import LiveLexicalIndex
from core.live import Change, LiveCollection, SupportsWrite, Upsert, apply_writes
from core.live_shard import live_writer
from core.ranking import EntityTable
from core.simulator.metrics import Records
from core.simulator.policies import PolicySpec
from core.simulator.retrieval import InProcessStrategies
from core.simulator.runner import SIM_EPOCH, ExperimentConfig, PolicyRun, SearchObserver
from core.simulator.users import SimSearch, SimulatorConfig, UserSimulator
from core.simulator.world import MusicWorld
from core.types import Interpretation, Strategy, StrategyKind

DEFAULT_RELEASES = 20
DEFAULT_FIRST_AT = 400
DEFAULT_EVERY = 100
DEFAULT_SHARE = 0.2
DEFAULT_DECAY = 300.0


@dataclass(frozen=True, kw_only=True)
class ReleaseConfig:
    """releases: tracks held back and released; first_at: the search count of the first release;
    every: searches between releases; share: of the searches from the first release on, the
    release-day known-item searches; decay: in searches, of a release's release-day weight
    exp(-age / decay); seed: which tracks are held back (one index serves every run seed)."""

    releases: int = DEFAULT_RELEASES
    first_at: int = DEFAULT_FIRST_AT
    every: int = DEFAULT_EVERY
    share: float = DEFAULT_SHARE
    decay: float = DEFAULT_DECAY
    seed: int = 0

    def __post_init__(self) -> None:
        if self.releases < 1:
            raise ValueError(f"`releases` must be >= 1, but got {self.releases}")
        if self.first_at < 0 or self.every < 0:
            raise ValueError(f"`first_at` and `every` must be >= 0, but got {self.first_at} and {self.every}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"`share` must be in [0, 1], but got {self.share}")
        if not (math.isfinite(self.decay) and self.decay > 0):
            raise ValueError(f"`decay` must be finite and > 0, but got {self.decay}")

    def schedule(self) -> tuple[int, ...]:
        """The search count at which each release is written, in release order."""
        return tuple(self.first_at + i * self.every for i in range(self.releases))


@dataclass(frozen=True, kw_only=True)
class Releases:
    """base: the catalog the index is built from (catalog order); released: the held-back tracks
    in release order; at: the search count of each release (non-decreasing)."""

    base: tuple[Entity, ...]
    released: tuple[Entity, ...]
    at: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.at) != len(self.released):
            raise ValueError(f"`at` must have {len(self.released)} entries, but got {len(self.at)}")
        if any(b < a for a, b in zip(self.at, self.at[1:], strict=False)):
            raise ValueError(f"`at` must be non-decreasing, but got {self.at}")

    def entities(self) -> list[Entity]:
        """Base, then releases: the ordinals once every release is out."""
        return [*self.base, *self.released]

    def ordinal(self, i: int) -> int:
        """The ordinal of release i."""
        return len(self.base) + i

    def due(self, t: int) -> list[int]:
        """The releases written just before search t."""
        return [i for i, a in enumerate(self.at) if a == t]


def hold_back(catalog: Sequence[Entity], config: ReleaseConfig) -> Releases:
    """config.releases tracks of `catalog` drawn with config.seed (module docstring), the rest as base."""
    copies = recording_copies(EntityTable.from_entities(catalog).recording_keys)
    eligible = [i for i, e in enumerate(catalog)
                if e.fields.get("title") and e.fields.get("artist") and i not in copies]
    if len(eligible) <= config.releases:
        raise ValueError(f"`releases` must be < the {len(eligible)} eligible tracks, but got {config.releases}")
    drawn = np.random.default_rng([config.seed, 15]).choice(len(eligible), size=config.releases, replace=False)
    held = [eligible[int(i)] for i in drawn]
    gone = set(held)
    return Releases(base=tuple(e for i, e in enumerate(catalog) if i not in gone),
                    released=tuple(catalog[i] for i in held), at=config.schedule())


def release_searches(releases: Releases, config: ReleaseConfig, simulator: SimulatorConfig, n: int
                     ) -> tuple[UserSimulator, list[SimSearch]]:
    """The users over the whole catalog (base and releases) and their first n searches with the
    release schedule and release-day demand of the module docstring (deterministic per
    simulator.seed)."""
    users = UserSimulator(MusicWorld.from_entities(releases.entities()), simulator)
    rng = np.random.default_rng([simulator.seed, 15])
    available = np.zeros(len(users.world), dtype=bool)
    available[:len(releases.base)] = True
    users.set_available(available)
    out, out_at = [], np.asarray(releases.at, dtype=np.float64)
    for t in range(n):
        due = releases.due(t)
        if due:
            available[[releases.ordinal(i) for i in due]] = True
            users.set_available(available)
        out_now = np.flatnonzero(out_at <= t)
        if out_now.size and rng.random() < config.share:
            weights = np.exp(-(t - out_at[out_now]) / config.decay)
            i = int(out_now[min(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side="right"),
                                out_now.size - 1)])
            out.append(users.known_item_search(releases.ordinal(i)))
        else:
            out.append(users.next_search())
    return users, out


class LexicalWriter:
    """A LiveLexicalIndex's SupportsWrite for new ids only (module docstring): adds each new
    entity and checks that its lexical ordinal is the collection's."""

    def __init__(self, index: LiveLexicalIndex) -> None:
        self.index = index

    def apply(self, changes: Sequence[Change]) -> None:
        for c in changes:
            if c.old is not None or c.new is None:
                raise ValueError(f"the simulator's lexical writer takes new ids only, but got a change of "
                                 f"ordinal {c.ordinal}")
            ordinal = self.index.add(c.new)
            if ordinal != c.ordinal:
                raise ValueError(f"the lexical ordinal must be the collection's {c.ordinal}, but got {ordinal}")


def _writer(strategy: Strategy, collection: LiveCollection) -> tuple[Strategy, SupportsWrite]:
    """(the strategy to serve, its live writer) of one loaded strategy, on `collection`."""
    if isinstance(strategy, LexicalIndex):
        live = LiveLexicalIndex(strategy)
        return cast(Strategy, live), LexicalWriter(live)
    strategy.collection = collection
    return strategy, live_writer(strategy)


@dataclass
class LiveCatalog:
    """The in-process strategies made live on one shared LiveCollection (go_live)."""

    strategies: InProcessStrategies
    collection: LiveCollection
    writers: list[SupportsWrite] = field(default_factory=list)

    def release(self, entities: Sequence[Entity]) -> list[Change]:
        """Write `entities` (new ids) into every strategy as one batch; answers cached before it
        are not served after it (InProcessStrategies.version)."""
        known = [e.id for e in entities if e.id in self.collection.ordinal]
        if known:
            raise ValueError(f"`entities` must be new ids, but got ids already written: {known[:5]}")
        changes = apply_writes(self.collection, self.writers, [Upsert(e) for e in entities])
        self.strategies.version += 1
        return changes


@dataclass
class AnswerCaches:
    """The answer caches of InProcessStrategies (keyed by catalog version), shared between runs."""

    answers: dict[tuple[str, str, int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    understood: dict[tuple[str, int], tuple[Interpretation, ...]] = field(default_factory=dict)


def go_live(strategies: InProcessStrategies, base: Sequence[Entity]) -> LiveCatalog:
    """Replace `strategies`' loaded strategies (opened from an index of `base`, in order) by live
    ones sharing one LiveCollection; their ids and ordinal map become the collection's, which
    follow its writes."""
    first = next(iter(strategies.loaded.values()))
    collection = LiveCollection(base, first.collection)
    live = LiveCatalog(strategies, collection)
    for name, strategy in list(strategies.loaded.items()):
        serving, writer = _writer(strategy, collection)
        strategies.loaded[name] = serving
        live.writers.append(writer)
    strategies.ids, strategies.ordinal = collection.ids, collection.ordinal
    return live


def run_with_releases(spec: PolicySpec, config: ExperimentConfig, root: str | os.PathLike[str],
                      strategies: Sequence[str], releases: Releases, searches: Sequence[SimSearch],
                      users: UserSimulator, *, memory_state: str | os.PathLike[str],
                      caches: AnswerCaches | None = None, observer: SearchObserver | None = None,
                      on_step: Callable[[int, LiveCatalog], None] | None = None) -> Records:
    """Run `spec` over `searches` on the index at `root` (built from releases.base), writing each
    release into every strategy just before the search it is due at (core.simulator.runner.
    run_policy, with the writes). Every run opens its own strategies (they change during it);
    caches: the answer caches every run of the same releases and searches shares (answers are
    cached per catalog version, the same in every run of one schedule); on_step(t, live): called after
    search t (what a benchmark samples from the live strategies, e.g. the memory strategy)."""
    clock_box: list[PolicyRun] = []
    loaded = InProcessStrategies(root, strategies, max(config.levels), memory_state=memory_state,
                                 clock=lambda: clock_box[0].now if clock_box else SIM_EPOCH)
    if caches is not None:
        loaded.cache, loaded.qu_cache = caches.answers, caches.understood
    try:
        live = go_live(loaded, releases.base)
        table = EntityTable.from_entities(releases.entities())
        run = PolicyRun(spec, config, loaded, users, table, observer)
        clock_box.append(run)
        rec = Records.empty(spec.name, loaded.names, len(searches))
        for t, sim in enumerate(searches):
            due = releases.due(t)
            if due:
                live.release([releases.released[i] for i in due])
            run.step(t, sim, rec)
            if on_step is not None:
                on_step(t, live)
        run.flush()
        return rec
    finally:
        loaded.close()


def memory_of(live: LiveCatalog) -> object | None:
    """The live memory strategy of `live` (None without one)."""
    return live.strategies.loaded.get(StrategyKind.MEMORY.value)
