"""Allocation policies: which strategies to call and with what quota, with the propensity of the choice.

Every policy scores the feasible allocations (core.policy.allocation) by their predicted hit
probability (core.policy.models) minus their cost in candidates and latency, then mixes in an
exploration floor: with probability `exploration_floor` the allocation is drawn uniformly instead,
so every allocation keeps probability >= floor / A and off-policy estimators stay unbiased. The
recorded propensity of the chosen allocation a is

    P(a) = (1 - floor) * P_rule(a) + floor / A

P_rule is exact for LinUCB (the argmax of the upper bounds, ties to the lowest index, so the rule
is deterministic and P_rule is one-hot), epsilon-greedy (the argmax of the posterior means, mixed
with uniform) and static plans (P(a) = 1, no floor). Thompson sampling acts on one posterior draw;
P_rule is estimated from `propensity_samples` further draws, independent of the acting one: the
share of them each allocation wins. Given the context, that estimate is unbiased for the chosen
allocation's probability too (counting the acting draw among them, as before issue 12, made the
expected logged propensity of a chosen allocation (1 + (K - 1) p) / K instead of p: 2.5 times too
high at p = 0.01, K = 64). An estimate can be 0, so Thompson sampling needs a floor > 0.
`BanditPolicy.probabilities` returns the same estimate for off-policy evaluation
(core.policy.evaluate, core.simulator.offpolicy), where it is unbiased for pi_e.
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


DEFAULT_KIND = PolicyKind.THOMPSON
DEFAULT_EXPLORATION_FLOOR = 0.01
DEFAULT_EPSILON = 0.1
DEFAULT_UCB_ALPHA = 1.0
DEFAULT_NOISE = 0.1
DEFAULT_PRIOR_PRECISION = 20.0
DEFAULT_PROPENSITY_SAMPLES = 64
DEFAULT_COST_PER_CANDIDATE = 0.0002
DEFAULT_COST_PER_MS = 0.001
DEFAULT_LATENCY_DECAY = 0.1
DEFAULT_PRIOR_HIT_RATE = 1.0
DEFAULT_MODEL = ModelKind.JOINT
DEFAULT_IGNORED_FEATURES = CONTEXT_FEATURES
# 30 s (a Spotify stream) of a median ~3.5 min track: why, in core.reward's module docstring.
DEFAULT_SATISFIED_FRACTION = 0.15


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """The settings of a BanditPolicy. Rewards and costs are in reward units: a search whose
    acted-on entity was retrieved is worth 1. (Why each default won, with the figures: NOTES.md.)

    kind: the rule (PolicyKind). Default thompson: it explores where it is unsure, and it led the
        learned rules in the issue-6 experiment (README "Experiment").
    levels: the quotas (candidates) a strategy can be given, strictly ascending from 0 (= not
        called). Default (0, 50, 100, 200): 53 joint allocations for four strategies at budget 200;
        finer levels (493 allocations) learned too slowly (NOTES.md session 3).
    budget: the most candidates one search may ask of all strategies together. Default 200: one
        strategy alone can fill the deepest level, the budget of the issue-6 experiment.
    exploration_floor: probability in [0, 1] that a search draws its allocation uniformly, so every
        allocation keeps propensity >= floor / A for off-policy evaluation (importance weights up
        to A / floor). Must be > 0 for thompson, whose estimated rule probability can be 0. Default
        0.01: recall costs less than at 0.05 (chosen on held-out seeds 5-7, NOTES.md session 4).
    epsilon: epsilon-greedy only: probability in [0, 1] of a uniform allocation instead of the
        greedy one. Default 0.1, the textbook value; not tuned.
    ucb_alpha: linucb only: posterior standard deviations (>= 0) added to each allocation's mean.
        Default 1.0, the usual one-sigma bonus; not tuned.
    noise: the observation noise scale of the Bayesian linear arms (core.policy.models), > 0,
        dimensionless (hits are 0 or 1): the posterior covariance is noise^2 A^-1, so it scales
        Thompson's draws and LinUCB's bonus. Default 0.1 (0.2 before session 3): more recall, fewer
        candidates (measured on seed 0, NOTES.md session 3).
    prior_precision: how many observations' worth the prior is, per feature direction, for the hit
        and fill arms; > 0. Default 20 (5 until session 4): each arm stays near its prior a little
        longer, fewer runs lock into a cheap allocation (chosen on held-out seeds 5-7, NOTES.md
        session 4).
    propensity_samples: thompson only: posterior redraws K >= 1 that estimate the rule's
        probabilities (module docstring); the estimate's standard error is sqrt(p (1 - p) / K),
        and each redraw costs one sample over every allocation. Default 64: SE <= 0.0625 per
        allocation for well under a millisecond per search; not tuned.
    cost_per_candidate: reward units (>= 0) charged per candidate an allocation is expected to
        fetch (the fill model's prediction, not the quota asked). Default 0.0002: keeps the policy
        under attribute-only's fetched count, where 0.00015 went over (chosen on held-out seeds 5-6,
        NOTES.md session 3).
    cost_per_ms: reward units (>= 0) charged per millisecond of the slowest strategy called (its
        moving-average latency). Default 0.001: 10 ms cost as much as 50 candidates; not tuned.
    latency_decay: weight in [0, 1] of a new latency measurement in each strategy's moving average.
        Default 0.1: about the last 10 calls count; not tuned.
    static_quotas: static only: one quota per strategy, in the policy's strategy order, each among
        `levels`; empty: the equal split of the budget (core.policy.allocation.equal_split).
    prior_hit_rate: in [0, 1], the cold-start belief that a strategy called at the deepest level
        finds the entity; level q starts at prior_hit_rate * sqrt(q / deepest level). Default 1.0,
        optimistic: each strategy alone at the whole budget starts as a sure hit, so those
        allocations are tried early (at 0.5 they were almost never tried; NOTES.md session 3).
    model: how allocations' hit probabilities are modelled (core.policy.models.ModelKind): joint,
        one arm per allocation, or independent, per (strategy, level) with independent misses.
        Default joint: it learns when strategies find the same entities, where the independent
        union assumes they do not and overvalues spreading the budget (core.policy.models).
    ignored_features: names from core.policy.features.FEATURE_NAMES that the hit and fill models do
        not see (zeroed before they predict or learn; still logged); non-empty needs features of
        that layout (dim DIM). Default CONTEXT_FEATURES (time, device, affinity): a linear arm per
        allocation could not use them, and recall rose without them (NOTES.md session 3).
    satisfied_fraction: in (0, 1], the fraction of a track a PLAY must reach to satisfy the user
        and so reward the policy (core.reward.satisfies). One setting for the broker and the
        simulator, which both judge with it. Default 0.15: Spotify counts a stream after 30 s, and
        30 s of a median ~3.5 min track is 0.14 (core.reward's module docstring); not tuned.
    """

    kind: PolicyKind = DEFAULT_KIND
    levels: tuple[int, ...] = DEFAULT_LEVELS
    budget: int = DEFAULT_BUDGET
    exploration_floor: float = DEFAULT_EXPLORATION_FLOOR
    epsilon: float = DEFAULT_EPSILON
    ucb_alpha: float = DEFAULT_UCB_ALPHA
    noise: float = DEFAULT_NOISE
    prior_precision: float = DEFAULT_PRIOR_PRECISION
    propensity_samples: int = DEFAULT_PROPENSITY_SAMPLES
    cost_per_candidate: float = DEFAULT_COST_PER_CANDIDATE
    cost_per_ms: float = DEFAULT_COST_PER_MS
    latency_decay: float = DEFAULT_LATENCY_DECAY
    static_quotas: tuple[int, ...] = ()
    prior_hit_rate: float = DEFAULT_PRIOR_HIT_RATE
    model: ModelKind = DEFAULT_MODEL
    ignored_features: tuple[str, ...] = DEFAULT_IGNORED_FEATURES
    satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION

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
        if self.kind is PolicyKind.THOMPSON and self.exploration_floor == 0.0:
            raise ValueError("`exploration_floor` must be > 0 for thompson (its estimated probability of the "
                             "chosen allocation can be 0), but got 0.0")
        if not 0.0 < self.satisfied_fraction <= 1.0:
            raise ValueError(f"`satisfied_fraction` must be in (0, 1], but got {self.satisfied_fraction}")
        if self.propensity_samples < 1:
            raise ValueError(f"`propensity_samples` must be >= 1, but got {self.propensity_samples}")
        if self.cost_per_candidate < 0 or self.cost_per_ms < 0 or self.ucb_alpha < 0:
            raise ValueError("`cost_per_candidate`, `cost_per_ms` and `ucb_alpha` must be >= 0, but got "
                             f"{self.cost_per_candidate}, {self.cost_per_ms}, {self.ucb_alpha}")


@dataclass(frozen=True, slots=True)
class Decision:
    """quotas: per strategy (0 = skip); propensity: P(this joint allocation), in (0, 1];
    marginals: per strategy, P(that strategy gets its quota); allocation: index in the space;
    explored: the allocation is not the policy's most probable one for this context (exploration)."""

    quotas: tuple[int, ...]
    propensity: float
    marginals: tuple[float, ...]
    allocation: int
    explored: bool = False


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


@dataclass(frozen=True, slots=True)
class Revealed:
    """What one search shows the models (BanditPolicy.reveal): hit_arms int64 (n,) distinct arms of
    the hit model and hits float64 (n,), 0 or 1; fill_arms int64 (m,) distinct (strategy, level)
    arms of the fill model and fill float64 (m,), the fraction of the level's quota returned."""

    hit_arms: np.ndarray
    hits: np.ndarray
    fill_arms: np.ndarray
    fill: np.ndarray


Rule = Callable[["BanditPolicy", np.ndarray, np.random.Generator], tuple[int, np.ndarray]]


def _thompson(policy: BanditPolicy, x: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """Act on draw 0; estimate every allocation's probability from draws 1..K alone (module
    docstring: draw 0 among them would bias the chosen allocation's estimate upwards)."""
    k = policy.config.propensity_samples
    winners = policy.model.winners(x, k + 1, rng, policy.cost(x))
    return int(winners[0]), np.bincount(winners[1:], minlength=policy.n_allocations) / k


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
        return Decision(self.space.quotas(chosen), float(probs[chosen]), self.space.marginals(probs, chosen), chosen,
                        explored=bool(probs[chosen] < probs.max()))

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
        self.learn_revealed(x, self.reveal(outcomes))

    def reveal(self, outcomes: Sequence[Outcome]) -> Revealed:
        """The arms of the hit and fill models that one search's per-strategy outcomes show, with
        what they show (`update` learns them; core.policy.warmstart weights them first)."""
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
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
        hit_arms, hits = self.model.observations(level, rank) if level.any() else empty
        return Revealed(hit_arms, hits, np.asarray(fill_arms, dtype=np.int64), np.asarray(fill, dtype=np.float64))

    def learn_revealed(self, x: np.ndarray, revealed: Revealed, hit_weights: np.ndarray | None = None,
                       fill_weights: np.ndarray | None = None) -> None:
        """Learn what `reveal` returned at context x (float64, (dim,)); weights: float64, > 0, one
        per hit (fill) arm, how many observations each counts for (None: 1)."""
        z = self.model_input(x)
        self.arms.update(z, revealed.hit_arms, revealed.hits, hit_weights)
        self.fill.update(z, revealed.fill_arms, revealed.fill, fill_weights)

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
