"""Allocation policies: which strategies to call and with what quota, with the propensity of the choice.

Every policy scores the feasible allocations (core.policy.allocation) by their predicted hit
probability (core.policy.models) minus their cost in candidates and latency, then mixes in an
exploration floor: with probability `exploration_floor` the allocation is drawn uniformly instead,
so every allocation keeps probability >= floor / A and off-policy estimators stay unbiased. The recorded propensity is

    P(a) = (1 - floor) * P_rule(a) + floor / A

where P_rule is exact for LinUCB and epsilon-greedy (argmax, or argmax mixed with uniform) and, for
Thompson sampling, estimated by re-drawing the posterior `propensity_samples` times and counting how
often each allocation wins (the acting draw is one of them). Static plans have P(a) = 1.
"""

from __future__ import annotations

import bisect
import enum
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.policy.allocation import DEFAULT_BUDGET, DEFAULT_LEVELS, AllocationSpace, equal_split
from core.policy.features import CONTEXT_FEATURES, FEATURE_NAMES
from core.policy.models import MODELS, HitModel, LinearArms, ModelKind
from core.storage import write_file_atomic


class PolicyKind(enum.StrEnum):
    THOMPSON = "thompson"
    LINUCB = "linucb"
    EPSILON_GREEDY = "epsilon-greedy"
    STATIC = "static"


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Costs are in reward units (a hit is worth 1): per candidate fetched and per millisecond of
    the slowest strategy called. static_quotas: per strategy, for kind "static" (empty: equal split).
    prior_hit_rate: the cold-start belief that a strategy called at the largest level finds the
    entity; level q starts at prior_hit_rate * sqrt(q / max level). The default 1.0 is optimistic:
    each strategy alone at the whole budget starts as a sure hit, so those allocations are tried
    and learned early. (At 0.5, the session-2 default, they started below what smaller
    allocations had learned and were almost never tried; the monotone closure then held them at
    the level of the allocations they contain.) exploration_floor: the share of searches that
    draw an allocation uniformly, so every allocation keeps propensity >= floor / A for off-policy
    evaluation; 0.01 (0.05 until session 4) allows importance weights up to 100 A and costs less
    recall (held-out seeds 5-7: +0.003 to +0.008 candidate recall at 20k searches).
    prior_precision: how many observations' worth the prior is, per feature direction; 20 (5 until
    session 4) holds each arm near its prior a little longer, which cost less recall early and
    locked fewer runs into a cheap allocation (held-out seeds 5-7, NOTES.md). model: how hit
    probabilities of allocations are modelled (core.policy.models: "joint", one arm per
    allocation, or "independent", per strategy and level with independent misses). ignored_features: names from
    core.policy.features.FEATURE_NAMES the hit model does not see (they are zeroed before it
    predicts or learns; they stay in the decision log); needs features of that layout (dim DIM)
    when not empty."""

    kind: PolicyKind = PolicyKind.THOMPSON
    levels: tuple[int, ...] = DEFAULT_LEVELS
    budget: int = DEFAULT_BUDGET
    exploration_floor: float = 0.01
    epsilon: float = 0.1
    ucb_alpha: float = 1.0
    noise: float = 0.1
    prior_precision: float = 20.0
    propensity_samples: int = 64
    cost_per_candidate: float = 0.0002
    cost_per_ms: float = 0.001
    latency_decay: float = 0.1
    static_quotas: tuple[int, ...] = ()
    prior_hit_rate: float = 1.0
    model: ModelKind = ModelKind.JOINT
    ignored_features: tuple[str, ...] = CONTEXT_FEATURES

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PolicyKind(self.kind))
        object.__setattr__(self, "model", ModelKind(self.model))
        object.__setattr__(self, "ignored_features", tuple(self.ignored_features))
        unknown = sorted(set(self.ignored_features) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"`ignored_features` must name features of core.policy.features, but got {unknown}")
        for name in ("exploration_floor", "epsilon", "latency_decay", "prior_hit_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], but got {getattr(self, name)}")
        if self.propensity_samples < 1:
            raise ValueError(f"`propensity_samples` must be >= 1, but got {self.propensity_samples}")
        if self.cost_per_candidate < 0 or self.cost_per_ms < 0 or self.ucb_alpha < 0:
            raise ValueError("`cost_per_candidate`, `cost_per_ms` and `ucb_alpha` must be >= 0")


@dataclass(frozen=True, slots=True)
class Decision:
    """quotas: per strategy (0 = skip); propensity: P(this joint allocation), in (0, 1];
    marginals: per strategy, P(that strategy gets its quota); allocation: index in the space."""

    quotas: tuple[int, ...]
    propensity: float
    marginals: tuple[float, ...]
    allocation: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one strategy did in a search that got feedback. rank: 1-based rank of the acted-on
    entity in the strategy's list, 0 = absent; answered: False for TIMEOUT, ERROR or SKIPPED;
    returned: how many candidates it returned (None: not known, so the fill model does not learn)."""

    quota: int
    rank: int
    answered: bool
    returned: int | None = None

    def __post_init__(self) -> None:
        if self.returned is not None and self.returned < 0:
            raise ValueError(f"`returned` must be >= 0, but got {self.returned}")


Rule = Callable[["BanditPolicy", np.ndarray, np.random.Generator], tuple[int, np.ndarray]]


def _thompson(policy: BanditPolicy, x: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    draws = policy.model.sample(x, policy.config.propensity_samples, rng)
    winners = (draws - policy.cost(x)[None, :]).argmax(axis=1)
    probs = np.bincount(winners, minlength=policy.n_allocations) / len(winners)
    return int(winners[0]), probs


def _linucb(policy: BanditPolicy, x: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    best = int((policy.model.mean(x, policy.config.ucb_alpha) - policy.cost(x)).argmax())
    return best, np.eye(policy.n_allocations)[best]


def _epsilon_greedy(policy: BanditPolicy, x: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    eps = policy.config.epsilon
    probs = np.full(policy.n_allocations, eps / policy.n_allocations)
    probs[int((policy.model.mean(x) - policy.cost(x)).argmax())] += 1.0 - eps
    return int(rng.choice(policy.n_allocations, p=probs)), probs


def _static(policy: BanditPolicy, x: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    return policy.static_allocation, np.eye(policy.n_allocations)[policy.static_allocation]


RULES: dict[PolicyKind, Rule] = {
    PolicyKind.THOMPSON: _thompson, PolicyKind.LINUCB: _linucb,
    PolicyKind.EPSILON_GREEDY: _epsilon_greedy, PolicyKind.STATIC: _static,
}


@dataclass
class BanditPolicy:
    """A contextual bandit over joint allocations for `strategies`, on context features of size `dim`."""

    strategies: tuple[str, ...]
    dim: int
    config: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        self.space = AllocationSpace(strategies=tuple(self.strategies), levels=self.config.levels,
                                     budget=self.config.budget)
        self.n_allocations = len(self.space.allocations)
        c = self.config
        self.model: HitModel = MODELS[c.model](self.space, self.dim, prior_precision=c.prior_precision, noise=c.noise,
                                               prior_hit_rate=c.prior_hit_rate)
        self.arms = self.model.arms
        # fill model: per (strategy, level), the fraction of the quota the strategy returns; the
        # prior is a full list
        self.fill = LinearArms(len(self.strategies) * len(c.levels), self.dim, prior_precision=c.prior_precision,
                               noise=c.noise, prior_mean=np.ones(len(self.strategies) * len(c.levels)))
        self.latency_ms = np.zeros(len(self.strategies))
        quotas = self.config.static_quotas or equal_split(self.space)
        self.static_allocation = self.space.index_of(quotas)
        self.floor = 0.0 if self.config.kind is PolicyKind.STATIC else self.config.exploration_floor
        self.feature_mask: np.ndarray | None = None
        if self.config.ignored_features:
            if self.dim != len(FEATURE_NAMES):
                raise ValueError(f"`ignored_features` needs the features of core.policy.features (dim "
                                 f"{len(FEATURE_NAMES)}), but dim is {self.dim}; pass ignored_features=()")
            self.feature_mask = np.array([name not in self.config.ignored_features for name in FEATURE_NAMES])

    def cost(self, x: np.ndarray) -> np.ndarray:
        """float64 (A,): each allocation's cost for context x (as the hit model sees it: see
        `model_input`), in reward units: the candidates it is expected to fetch and the slowest
        latency."""
        c = self.config
        return self.space.cost(self.latency_ms, c.cost_per_candidate, c.cost_per_ms, self.expected_returned(x))

    def expected_returned(self, x: np.ndarray) -> np.ndarray:
        """float64 (S, L): how many candidates each strategy is expected to return at each level
        for context x (as the hit model sees it), from the fill model: per (strategy, level) a
        linear arm of the fraction of the quota returned, learned from Outcome.returned."""
        fill = np.clip(self.fill.theta @ x, 0.0, 1.0).reshape(len(self.strategies), len(self.config.levels))
        return fill * np.asarray(self.config.levels, dtype=np.float64)[None, :]

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """x (float64, (dim,)) as the hit model sees it: the ignored features zeroed."""
        return x if self.feature_mask is None else np.where(self.feature_mask, x, 0.0)

    def probabilities(self, x: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """The rule's choice for context x and every allocation's probability, float64 (A,),
        exploration floor included (the choice is the rule's, before the floor's uniform draw)."""
        chosen, rule_probs = RULES[self.config.kind](self, self.model_input(x), rng)
        return chosen, (1.0 - self.floor) * rule_probs + self.floor / self.n_allocations

    def decide(self, x: np.ndarray, rng: np.random.Generator) -> Decision:
        """Choose an allocation for context x (float64, (dim,))."""
        chosen, probs = self.probabilities(x, rng)
        if self.floor > 0 and rng.random() < self.floor:
            chosen = int(rng.integers(self.n_allocations))
        return Decision(self.space.quotas(chosen), float(probs[chosen]), self.space.marginals(probs, chosen), chosen)

    def observe_latency(self, strategy: int, latency_ms: float) -> None:
        """Fold one measured call latency into the strategy's moving average (an action feature)."""
        d = self.config.latency_decay
        self.latency_ms[strategy] = latency_ms if self.latency_ms[strategy] == 0 else \
            (1 - d) * self.latency_ms[strategy] + d * latency_ms

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        """core.policy.allocator.Allocator.learn: the per-strategy outcomes teach the hit and fill
        models (`update`); the scalar reward adds nothing they do not already see."""
        self.update(x, outcomes)

    def update(self, x: np.ndarray, outcomes: Sequence[Outcome]) -> None:
        """Learn from one search's feedback. A strategy called with quota q reveals the hit for
        every level up to q (was the entity in its top-q' for q' <= q?), so all those arms learn."""
        if len(outcomes) != len(self.strategies):
            raise ValueError(f"`outcomes` must have {len(self.strategies)} entries, but got {len(outcomes)}")
        levels = self.config.levels
        level = np.zeros(len(outcomes), dtype=np.int64)
        rank = np.zeros(len(outcomes), dtype=np.int64)
        fill_arms, fill = [], []
        for s, o in enumerate(outcomes):
            if not o.answered or o.quota <= 0:
                continue
            # the largest level within the quota asked (a quota between levels reveals those below it)
            level[s] = bisect.bisect_right(levels, o.quota) - 1
            rank[s] = o.rank
            if o.returned is None:
                continue
            # a list of n for quota q would have held min(q', n) at every level q' <= q
            for li in range(1, int(level[s]) + 1):
                fill_arms.append(s * len(levels) + li)
                fill.append(min(levels[li], o.returned) / levels[li])
        if level.any():
            self.model.update(self.model_input(x), level, rank)
        if fill_arms:
            self.fill.update(self.model_input(x), np.asarray(fill_arms, dtype=np.int64), np.asarray(fill))

    def to_bytes(self, extra: Mapping[str, Any] | None = None, blobs: Mapping[str, bytes] | None = None) -> bytes:
        """The learned state (with the config it belongs to, `extra` (JSON-able) and `blobs`, named
        byte strings such as the query history's JSON) as .npz bytes; a consistent copy, so it can
        be written on another thread while learning goes on."""
        buf = io.BytesIO()
        meta = json.dumps({"strategies": list(self.strategies), "dim": self.dim, "config": asdict(self.config),
                           "extra": dict(extra or {})})
        arrays: dict[str, np.ndarray] = {"meta_utf8": np.frombuffer(meta.encode(), dtype=np.uint8),
                                         "latency_ms": self.latency_ms, **self.arms.state(),
                                         **{f"fill_{k}": v for k, v in self.fill.state().items()},
                                         **{f"blob_{k}": np.frombuffer(v, dtype=np.uint8) for k, v in
                                            (blobs or {}).items()}}
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None,
             blobs: Mapping[str, bytes] | None = None) -> None:
        """Atomically write `to_bytes(extra, blobs)` to one .npz file."""
        write_file_atomic(Path(path), self.to_bytes(extra, blobs))

    def load(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Restore state saved by `save`; returns its `extra`, with each blob under its name (bytes).
        ValueError if it belongs to other strategies or features; other exceptions (zipfile,
        KeyError, OSError) when the file is damaged: the caller names the file."""
        with np.load(path, allow_pickle=False) as data:
            text = data["meta_utf8"].tobytes().decode() if "meta_utf8" in data else str(data["meta"])
            meta = json.loads(text)
            if meta["strategies"] != list(self.strategies) or meta["dim"] != self.dim:
                raise ValueError(f"{path}: saved for strategies {meta['strategies']} and dim {meta['dim']}, "
                                 f"not {list(self.strategies)} and {self.dim}")
            self.arms.load_state({k: data[k] for k in ("a_inv", "b", "n")})
            if "fill_a_inv" in data:  # snapshots before the fill model start it from its prior
                self.fill.load_state({k: data[f"fill_{k}"] for k in ("a_inv", "b", "n")})
            self.latency_ms = np.array(data["latency_ms"])
            blobs = {k[len("blob_"):]: data[k].tobytes() for k in data.files if k.startswith("blob_")}
        return {**dict(meta.get("extra", {})), **blobs}
