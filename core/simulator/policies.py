"""The retrieval plans the experiment compares, all at one total candidate budget.

- `<strategy>-only`: that strategy alone at the largest level within the budget (static);
- `static-equal`: every strategy at the largest equal level within the budget, ranked by the
  broker's score blend (core.ranking.BlendRanker: RRF plus popularity and field matches);
- `static-rrf`: the same equal quotas fused by reciprocal rank fusion (Elasticsearch/OpenSearch
  RRF); the two statics differ only in ranking, so their target recall is the same;
- `epsilon-greedy`, `linucb`, `thompson` (the default): core.policy.BanditPolicy of that kind;
- `oracle`: knows the target of every search and takes the cheapest allocation that retrieves it
  (OracleAllocator, oracle_allocation), or the cheapest allocation when none does;
- a spec with a `factory` plugs in any other Allocator (an external peer such as Vowpal Wabbit, or
  a frozen policy for off-policy checks);
- `thompson-taught-target` (a diagnostic, run only when named: `diagnostic_policies`): the default
  learner taught each search's target, what the user wanted, instead of the user's events. Against
  `thompson` it splits a learned policy's shortfall into what its feedback costs (users settle for
  a near track, abandon, or reformulate) and what learning itself costs.

Every plan is a core.policy.allocator.Allocator, so the runner treats them all alike.

Every plan but `static-rrf` ranks with the broker's cold-start ranker (core.ranking
DEFAULT_COLD_START, the score blend), so that a plan is measured as the broker would serve it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from core.policy.allocation import AllocationSpace, equal_split
from core.policy.allocator import Allocator
from core.policy.policies import BanditPolicy, Decision, Outcome, PolicyConfig, PolicyKind
from core.ranking import DEFAULT_COLD_START, RankerKind

ORACLE = "oracle"
TAUGHT_TARGET = "thompson-taught-target"


@dataclass
class Foresight:
    """What the simulator knows of the search at hand and no real policy may see: rewards, float64
    (A,), the target reward r(a) of every allocation (core.simulator.runner.target_rewards). Every
    allocator of a run is built with the run's Foresight; only the oracle reads it."""

    rewards: np.ndarray | None = None


def oracle_allocation(rewards: np.ndarray, space: AllocationSpace) -> Decision:
    """The allocation with the largest target reward; ties go to fewer candidates, then lower index."""
    quota = np.asarray(space.levels)[space.allocations].sum(axis=1)
    best = int(np.lexsort((np.arange(rewards.size), quota, -rewards))[0])
    return Decision(space.quotas(best), 1.0, (1.0,) * space.allocations.shape[1], best)


class OracleAllocator:
    """Knows each search's target: takes oracle_allocation of the run's Foresight. It learns nothing."""

    def __init__(self, strategies: tuple[str, ...], config: PolicyConfig, foresight: Foresight) -> None:
        self.config, self.foresight = config, foresight
        self.space = AllocationSpace(strategies=strategies, levels=config.levels, budget=config.budget)

    def decide(self, x: np.ndarray, rng: np.random.Generator) -> Decision:
        if self.foresight.rewards is None:
            raise RuntimeError("the oracle decides only inside a simulated run (its Foresight holds no rewards)")
        return oracle_allocation(self.foresight.rewards, self.space)

    def observe_latency(self, strategy: int, latency_ms: float) -> None:
        """Nothing: the oracle knows the latencies."""

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        """Nothing: the oracle knows the answers."""


AllocatorFactory = Callable[[tuple[str, ...], PolicyConfig], Allocator]
"""Builds an Allocator for the strategies (column order) and the experiment's PolicyConfig (whose
levels, budget and costs it must use)."""


@dataclass(frozen=True, kw_only=True)
class PolicySpec:
    """name: as reported; kind: the BanditPolicy kind (None for the oracle and for a factory);
    static_quotas: per strategy, for kind STATIC (empty = equal split); ranker: how the merged
    candidates are ranked; factory: builds the Allocator instead of a BanditPolicy of `kind`;
    teach_target: a learning plan's allocator is taught each search's target (a feedback event
    naming it) instead of the user's events, which still reach the memory strategy (a diagnostic,
    core.simulator.runner.PolicyRun.feedback)."""

    name: str
    kind: PolicyKind | None
    static_quotas: tuple[int, ...] = ()
    ranker: RankerKind = DEFAULT_COLD_START
    factory: AllocatorFactory | None = None
    teach_target: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("`name` must not be empty")
        if self.kind is None and self.factory is None and self.name != ORACLE:
            raise ValueError(f"`kind` may be None only for {ORACLE!r} or with a `factory`, but got None for "
                             f"{self.name!r}")
        if self.factory is not None and self.kind is not None:
            raise ValueError(f"give either `kind` or `factory` for {self.name!r}, not both")
        if self.static_quotas and self.kind is not PolicyKind.STATIC:
            raise ValueError(f"`static_quotas` needs kind 'static', but got {self.kind}")
        if self.teach_target and not self.learns:
            raise ValueError(f"`teach_target` needs a plan that learns, but {self.name!r} does not")

    @property
    def learns(self) -> bool:
        """Does the plan change as it goes (a learned policy or a factory's allocator)? Static plans
        and the oracle do not."""
        return self.kind not in (PolicyKind.STATIC, None) or self.factory is not None

    def allocator(self, strategies: tuple[str, ...], config: PolicyConfig, dim: int,
                  foresight: Foresight | None = None) -> Allocator:
        """This spec's Allocator over `strategies`. config: the experiment's, whose kind is replaced
        by ours; foresight: the run's (the oracle's only input)."""
        if self.factory is not None:
            return self.factory(strategies, config)
        if self.kind is None:
            return OracleAllocator(strategies, config, foresight or Foresight())
        return BanditPolicy(strategies, dim, replace(config, kind=self.kind, static_quotas=self.static_quotas))


def standard_policies(strategies: Sequence[str], levels: Sequence[int], budget: int) -> list[PolicySpec]:
    """The plans of the module docstring for these strategies, levels and budget."""
    space = AllocationSpace(strategies=tuple(strategies), levels=tuple(levels), budget=budget)
    alone = max(q for q in levels if q <= budget)
    out = [PolicySpec(name=f"{s}-only", kind=PolicyKind.STATIC,
                      static_quotas=tuple(alone if t == s else 0 for t in strategies)) for s in strategies]
    equal = equal_split(space)
    out += [PolicySpec(name="static-equal", kind=PolicyKind.STATIC, static_quotas=equal, ranker=RankerKind.BLEND),
            PolicySpec(name="static-rrf", kind=PolicyKind.STATIC, static_quotas=equal, ranker=RankerKind.RRF),
            PolicySpec(name="epsilon-greedy", kind=PolicyKind.EPSILON_GREEDY),
            PolicySpec(name="linucb", kind=PolicyKind.LINUCB),
            PolicySpec(name="thompson", kind=PolicyKind.THOMPSON),
            PolicySpec(name=ORACLE, kind=None)]
    return out


def diagnostic_policies() -> list[PolicySpec]:
    """Plans that no deployment could run, for taking a result apart (module docstring): run only
    when named."""
    return [PolicySpec(name=TAUGHT_TARGET, kind=PolicyKind.THOMPSON, teach_target=True)]
