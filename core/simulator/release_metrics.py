"""What a run with new releases measures (core.simulator.releases): how soon and how often each
plan retrieves a new release, and how the memory strategy and the bandit adapt to them.

A release-targeting search is one whose target is a released track (release-day known-item
searches and the ordinary user model's searches for it alike); its age is the number of searches
since the release (0: the first search after the write). Retrieved means what the experiment's
target recall means: the target is among the candidates the plan's called strategies returned
(Records.target_found).

- to_first_hit: per release, the release-targeting searches up to and including the first that
  retrieves it (1: the first one did), and the searches since the release until then (any
  target); releases never retrieved within the run are counted apart.
- windows: per age window [lo, hi), the hit rate on release-targeting searches, the share whose
  target is in the final top 10 (Records.shown: what the user sees), each strategy's
  mean quota on them (the bandit's allocation) and the share of them each strategy alone would
  retrieve at the largest level (ReleaseTracker.alone: the memory strategy's column rises as it
  learns the new ids), beside the same on the other known-item (spearfishing) searches from the
  first release on: release-day searches are known-item searches, the comparable baseline.
- memory: sampled every `sample_every` searches, the learned (observed) query-entity pairs of the
  memory strategy on released ids and how many releases have one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.eventlog import DecisionRecord
from core.simulator.metrics import RANK_CUTOFF, Records
from core.simulator.releases import LiveCatalog, Releases, memory_of
from core.simulator.users import Intent, SimSearch

DEFAULT_WINDOWS = (0, 25, 100, 400)  # window edges in searches since a release; the last is open
DEFAULT_SAMPLE_EVERY = 100


class ReleaseTracker:
    """Observer (core.simulator.runner.SearchObserver) and on_step of run_with_releases.
    alone: bool (n, S), would strategy s alone retrieve search t's target at the largest level;
    memory: (t, learned pairs on released ids, releases with one) every `sample_every` searches."""

    def __init__(self, releases: Releases, n: int, n_strategies: int, sample_every: int = DEFAULT_SAMPLE_EVERY
                 ) -> None:
        if sample_every < 1:
            raise ValueError(f"`sample_every` must be >= 1, but got {sample_every}")
        self.n_base = len(releases.base)
        self.sample_every = sample_every
        self.alone = np.zeros((n, n_strategies), dtype=bool)
        self.memory: list[tuple[int, int, int]] = []

    def observe(self, t: int, sim: SimSearch, record: DecisionRecord, hits: np.ndarray, returned: np.ndarray
                ) -> None:
        self.alone[t] = hits[:, -1]

    def step(self, t: int, live: LiveCatalog) -> None:
        if (t + 1) % self.sample_every:
            return
        memory = memory_of(live)
        observed = getattr(memory, "observed", {})
        ordinals = [o for pairs in observed.values() for o in pairs if o >= self.n_base]
        self.memory.append((t + 1, len(ordinals), len(set(ordinals))))


@dataclass(frozen=True, kw_only=True)
class Window:
    """lo, hi: ages [lo, hi) (hi None: open); searches: release-targeting searches in it; hit_rate:
    of them retrieved (nan when none); top10: of them with the target in the final top 10; quota:
    float64 (S,) mean quota per strategy; alone: float64 (S,) share each strategy alone would retrieve."""

    lo: int
    hi: int | None
    searches: int
    hit_rate: float
    top10: float
    quota: np.ndarray
    alone: np.ndarray


@dataclass(frozen=True, kw_only=True)
class ReleaseMeasures:
    """tries: int64 (releases,), release-targeting searches to the first retrieval (0 = never
    retrieved); elapsed: int64 (releases,), searches since the release to it (0 = never);
    targeted: int64 (releases,), release-targeting searches in the run; windows: by age; other:
    the other known-item searches from the first release on (lo = hi = 0); memory: ReleaseTracker.memory."""

    policy: str
    tries: np.ndarray
    elapsed: np.ndarray
    targeted: np.ndarray
    windows: tuple[Window, ...]
    other: Window
    memory: tuple[tuple[int, int, int], ...]

    def first_hit(self) -> dict[str, float]:
        """mean and median tries and elapsed over the releases retrieved, and how many never were."""
        found = self.tries > 0
        if not found.any():
            return {"tries_mean": float("nan"), "tries_median": float("nan"), "elapsed_mean": float("nan"),
                    "elapsed_median": float("nan"), "never": int((~found).sum())}
        return {"tries_mean": float(self.tries[found].mean()), "tries_median": float(np.median(self.tries[found])),
                "elapsed_mean": float(self.elapsed[found].mean()),
                "elapsed_median": float(np.median(self.elapsed[found])), "never": int((~found).sum())}


def _window(lo: int, hi: int | None, rows: np.ndarray, rec: Records, target: np.ndarray, alone: np.ndarray
            ) -> Window:
    n_strategies = rec.quotas.shape[1]
    if rows.size == 0:
        nan = np.full(n_strategies, np.nan)
        return Window(lo=lo, hi=hi, searches=0, hit_rate=float("nan"), top10=float("nan"), quota=nan, alone=nan)
    top10 = (rec.shown[rows, :RANK_CUTOFF] == target[rows, None]).any(axis=1)
    return Window(lo=lo, hi=hi, searches=int(rows.size), hit_rate=float(rec.target_found[rows].mean()),
                  top10=float(top10.mean()), quota=rec.quotas[rows].astype(np.float64).mean(axis=0),
                  alone=alone[rows].mean(axis=0))


def release_measures(rec: Records, searches: Sequence[SimSearch], releases: Releases, tracker: ReleaseTracker,
                     windows: Sequence[int] = DEFAULT_WINDOWS) -> ReleaseMeasures:
    """The measures of the module docstring for one run (`rec` of `searches` with `releases`)."""
    if list(windows) != sorted(set(windows)) or not windows or windows[0] < 0:
        raise ValueError(f"`windows` must be increasing edges >= 0, but got {windows}")
    n_base, n_rel = len(releases.base), len(releases.released)
    target = np.array([s.target for s in searches], dtype=np.int64)
    release = np.where(target >= n_base, target - n_base, -1)
    at = np.asarray(releases.at, dtype=np.int64)
    t_all = np.arange(len(searches))
    age = np.where(release >= 0, t_all - at[np.maximum(release, 0)], -1)
    if np.any((release >= 0) & (age < 0)):
        raise ValueError("a search targets a release before its release")
    tries, elapsed, targeted = (np.zeros(n_rel, dtype=np.int64) for _ in range(3))
    for i in range(n_rel):
        rows = np.flatnonzero(release == i)
        targeted[i] = rows.size
        hit = np.flatnonzero(rec.target_found[rows])
        if hit.size:
            tries[i], elapsed[i] = hit[0] + 1, rows[hit[0]] - at[i] + 1
    upper: list[int | None] = [*windows[1:], None]
    by_age = tuple(_window(lo, hi, np.flatnonzero((release >= 0) & (age >= lo) & (hi is None or age < hi)),
                           rec, target, tracker.alone) for lo, hi in zip(windows, upper, strict=True))
    first = int(at.min()) if n_rel else len(searches)
    known_item = np.array([s.intent == Intent.SPEARFISHING for s in searches], dtype=bool)
    other = _window(0, 0, np.flatnonzero((release < 0) & (t_all >= first) & known_item), rec, target,
                    tracker.alone)
    return ReleaseMeasures(policy=rec.policy, tries=tries, elapsed=elapsed, targeted=targeted, windows=by_age,
                           other=other, memory=tuple(tracker.memory))
