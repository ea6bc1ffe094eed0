"""The retrieval plans the experiment compares, all at one total candidate budget.

- `<strategy>-only`: that strategy alone at the largest level within the budget (static);
- `static-equal`: every strategy at the largest equal level within the budget, ranked by the
  broker's score blend (core.ranking.BlendRanker: RRF plus popularity and field matches);
- `static-rrf`: the same equal quotas fused by reciprocal rank fusion (Elasticsearch/OpenSearch
  RRF); the two statics differ only in ranking, so their candidate recall is the same;
- `epsilon-greedy`, `linucb`, `thompson` (the default): core.policy.BanditPolicy of that kind;
- `oracle`: knows the target of every search and takes the cheapest allocation that retrieves it
  (core.simulator.runner.oracle_allocation), or the cheapest allocation when none does;
- a spec with a `factory` plugs in any other Allocator (an external peer such as Vowpal Wabbit, or
  a frozen policy for off-policy checks).

Every plan but `static-equal` ranks with RRF, the broker's cold-start ranker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from core.policy.allocation import AllocationSpace, equal_split
from core.policy.policies import BanditPolicy, Decision, Outcome, PolicyConfig, PolicyKind
from core.ranking import RankerKind

ORACLE = "oracle"


class Allocator(Protocol):
    """What the runner asks of a policy: choose an allocation of `space` for features x, hear the
    latencies of the calls, and learn from a search's feedback. `config` carries the costs and the
    allocation space every plan of an experiment shares."""

    space: AllocationSpace
    config: PolicyConfig

    def decide(self, x: np.ndarray, rng: np.random.Generator) -> Decision: ...

    def observe_latency(self, strategy: int, latency_ms: float) -> None: ...

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        """outcomes: per strategy, as core.reward.strategy_outcomes; reward: core.reward.search_reward."""


class BanditAllocator:
    """A core.policy BanditPolicy as an Allocator: it learns from the per-strategy outcomes, as the
    broker's does. learn=False freezes it as it stands, latency estimates included, so its action
    probabilities are a fixed function of the context (what off-policy evaluation assumes)."""

    def __init__(self, policy: BanditPolicy, *, learn: bool = True) -> None:
        self.policy, self.space, self.config, self.learning = policy, policy.space, policy.config, learn

    def decide(self, x: np.ndarray, rng: np.random.Generator) -> Decision:
        return self.policy.decide(x, rng)

    def observe_latency(self, strategy: int, latency_ms: float) -> None:
        if self.learning:
            self.policy.observe_latency(strategy, latency_ms)

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        if self.learning:
            self.policy.update(x, outcomes)


AllocatorFactory = Callable[[tuple[str, ...], PolicyConfig], Allocator]
"""Builds an Allocator for the strategies (column order) and the experiment's PolicyConfig (whose
levels, budget and costs it must use)."""


@dataclass(frozen=True, kw_only=True)
class PolicySpec:
    """name: as reported; kind: the BanditPolicy kind (None for the oracle and for a factory);
    static_quotas: per strategy, for kind STATIC (empty = equal split); ranker: how the merged
    candidates are ranked; factory: builds the Allocator instead of a BanditPolicy of `kind`."""

    name: str
    kind: PolicyKind | None
    static_quotas: tuple[int, ...] = ()
    ranker: RankerKind = RankerKind.RRF
    factory: AllocatorFactory | None = None

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

    @property
    def is_oracle(self) -> bool:
        return self.kind is None and self.factory is None

    def allocator(self, strategies: tuple[str, ...], config: PolicyConfig, dim: int) -> Allocator:
        """This spec's Allocator over `strategies` (the oracle's is a static stand-in that only
        supplies the space and costs). config: the experiment's, whose kind is replaced by ours."""
        if self.factory is not None:
            return self.factory(strategies, config)
        kind = self.kind if self.kind is not None else PolicyKind.STATIC
        return BanditAllocator(BanditPolicy(strategies, dim, replace(config, kind=kind,
                                                                     static_quotas=self.static_quotas)))


def standard_policies(strategies: Sequence[str], levels: Sequence[int], budget: int) -> list[PolicySpec]:
    """The plans of the module docstring for these strategies, levels and budget."""
    space = AllocationSpace(strategies=tuple(strategies), levels=tuple(levels), budget=budget)
    alone = max(q for q in levels if q <= budget)
    out = [PolicySpec(name=f"{s}-only", kind=PolicyKind.STATIC,
                      static_quotas=tuple(alone if t == s else 0 for t in strategies)) for s in strategies]
    equal = equal_split(space)
    out += [PolicySpec(name="static-equal", kind=PolicyKind.STATIC, static_quotas=equal, ranker=RankerKind.BLEND),
            PolicySpec(name="static-rrf", kind=PolicyKind.STATIC, static_quotas=equal),
            PolicySpec(name="epsilon-greedy", kind=PolicyKind.EPSILON_GREEDY),
            PolicySpec(name="linucb", kind=PolicyKind.LINUCB),
            PolicySpec(name="thompson", kind=PolicyKind.THOMPSON),
            PolicySpec(name=ORACLE, kind=None)]
    return out
