"""The retrieval plans the experiment compares, all at one total candidate budget.

- `<strategy>-only`: that strategy alone at the largest level within the budget (static);
- `static-equal`: every strategy at the largest equal level within the budget, ranked by the
  broker's score blend (core.ranking.BlendRanker: RRF plus popularity and field matches);
- `static-rrf`: the same equal quotas fused by reciprocal rank fusion (Elasticsearch/OpenSearch
  RRF); the two statics differ only in ranking, so their candidate recall is the same;
- `epsilon-greedy`, `linucb`, `thompson` (the default): core.policy.BanditPolicy of that kind;
- `oracle`: knows the target of every search and takes the cheapest allocation that retrieves it
  (core.simulator.runner.oracle_allocation), or the cheapest allocation when none does.

Every plan but `static-equal` ranks with RRF, the broker's cold-start ranker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.policy.allocation import AllocationSpace, equal_split
from core.policy.policies import PolicyKind
from core.ranking import RankerKind

ORACLE = "oracle"


@dataclass(frozen=True, kw_only=True)
class PolicySpec:
    """name: as reported; kind: the BanditPolicy kind (None for the oracle); static_quotas: per
    strategy, for kind STATIC (empty = equal split); ranker: how the merged candidates are ranked."""

    name: str
    kind: PolicyKind | None
    static_quotas: tuple[int, ...] = ()
    ranker: RankerKind = RankerKind.RRF

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("`name` must not be empty")
        if self.kind is None and self.name != ORACLE:
            raise ValueError(f"`kind` may be None only for {ORACLE!r}, but got None for {self.name!r}")
        if self.static_quotas and self.kind is not PolicyKind.STATIC:
            raise ValueError(f"`static_quotas` needs kind 'static', but got {self.kind}")

    @property
    def is_oracle(self) -> bool:
        return self.kind is None


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
