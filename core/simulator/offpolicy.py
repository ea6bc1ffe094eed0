"""The off-policy check of issue 6: a policy's value estimated from another run's decision log
(core.ope's IPS, SNIPS and DR), next to its value measured by running it on the same searches.

Design, and why:

- Logger: `UniformAllocator`, every feasible allocation with probability exactly 1/A. Its
  propensities are exact (Thompson sampling's are estimated from redraws, and an estimated
  propensity in the denominator biases IPS upwards), and it covers every target. The price is
  variance: a deterministic target's weight is A on about n/A rounds, so its effective sample size
  is n/A. The check runs in the experiment's space, `OPE_LEVELS` (0, 50, 100, 200) with budget 200:
  A = 53 for four strategies, about 380 rounds per allocation at 20k searches. Finer levels
  (0, 10, 25, 50, 100, 200) would give A = 493, about 40 rounds per allocation and intervals of
  about ±0.2. Every policy of the check (logger and targets, the trained one included) uses that
  space.
- Targets: BanditPolicies frozen as they stand (`core.policy.allocator.Frozen(policy)`: no
  learning and no latency updates, so pi_e(a | x) is a fixed function of the context, as
  off-policy evaluation assumes).
  pi_e is core.policy.evaluate.action_distribution: one-hot for a static plan, the rule's
  probabilities mixed with the exploration floor otherwise (Thompson's from `propensity_samples`
  redraws: an unbiased estimate of its probabilities, which IPS and DR are linear in).
- Reward per search: core.reward.search_reward when the user acted, 0 otherwise, as the broker's
  decision log reads it (core.eventlog.BanditLog), so a policy's value is its mean reward per
  search. The measured value is that mean over the target's own run, with a normal 95% interval.
- Same searches: the logging run and every target run replay one seeded stream of searches with
  the same click uniforms (core.simulator.runner: common random numbers). A target that chooses
  the logged allocation on a search then sees the logged reward, so, given the stream, the
  estimators' expectation over the logger's draws is the target's measured value (exactly for a
  deterministic target). One thing breaks this: the memory strategy learns from each run's own
  feedback, so its lists, and the rewards, can differ between runs on the same search with the
  same allocation. `TargetCheck.agreement` measures how often they do not.
- DR's reward model q(x, a) is fit on the log only, with K-fold cross-fitting (each round is
  predicted by a model that did not see it; Chernozhukov et al., "Double/debiased machine
  learning", Econometrics Journal 2018; obp's RegressionModel.fit_predict does the same): ridge
  regression on the context crossed with the allocation's shape (per strategy, a one-hot of its
  level; per pair of strategies, both called), plus one intercept per allocation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np

from core.catalog import Entity
from core.ope import Estimate, Estimator, IntervalConfig, LoggedFeedback, estimate_with_ci, importance_weights
from core.policy.allocation import AllocationSpace, equal_split
from core.policy.allocator import Allocator, Frozen
from core.policy.evaluate import action_distribution
from core.policy.features import DIM, FEATURE_NAMES
from core.policy.history import HISTORY_FEATURES
from core.policy.policies import BanditPolicy, Decision, Outcome, PolicyConfig, PolicyKind
from core.simulator.metrics import Records
from core.simulator.policies import PolicySpec
from core.simulator.runner import EXPERIMENT_LEVELS, ExperimentConfig, run_experiment

OPE_LEVELS = EXPERIMENT_LEVELS
LOGGER = "uniform"
DEFAULT_FOLDS = 2
DEFAULT_RIDGE = 10.0
_TRAIN_SEED_OFFSET = 1000  # the learned target trains on searches the log never sees


class UniformAllocator:
    """The logging policy: every allocation of the space with probability 1 / A, exactly."""

    def __init__(self, strategies: tuple[str, ...], config: PolicyConfig) -> None:
        self.config = config
        self.space = AllocationSpace(strategies=strategies, levels=config.levels, budget=config.budget)
        self.n_allocations = len(self.space.allocations)
        self._probs = np.full(self.n_allocations, 1.0 / self.n_allocations)

    def decide(self, x: np.ndarray, rng: np.random.Generator) -> Decision:
        a = int(rng.integers(self.n_allocations))
        return Decision(self.space.quotas(a), 1.0 / self.n_allocations, self.space.marginals(self._probs, a), a)

    def observe_latency(self, strategy: int, latency_ms: float) -> None:
        pass

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        pass


def ope_rewards(rec: Records) -> np.ndarray:
    """float64 (N,): the reward of each search, 0 where the user did not act (module docstring)."""
    return np.where(rec.feedback, np.nan_to_num(rec.reward.astype(np.float64)), 0.0)


def logged_feedback(rec: Records) -> LoggedFeedback:
    """The run `rec` as core.ope's logged bandit feedback (one slot)."""
    return LoggedFeedback(reward=ope_rewards(rec), action=rec.allocation, pscore=rec.propensity)


def policy_distribution(policy: BanditPolicy, features: np.ndarray, seed: int = 0) -> np.ndarray:
    """float64 (n, A, 1): pi_e(a | x_t) of `policy` on each context (features: (n, DIM))."""
    return action_distribution(policy, np.asarray(features, dtype=np.float64), np.random.default_rng(seed))


def allocation_design(space: AllocationSpace) -> np.ndarray:
    """float64 (A, P): an allocation's shape, [1, per strategy a one-hot of its level > 0, per pair
    of strategies 1 if both are called], the part of the reward model crossed with the context."""
    alloc = space.allocations
    n_levels = len(space.levels)
    onehot = [(alloc[:, s, None] == np.arange(1, n_levels)[None, :]) for s in range(alloc.shape[1])]
    called = alloc > 0
    pairs = [called[:, s] & called[:, t] for s in range(alloc.shape[1]) for t in range(s + 1, alloc.shape[1])]
    return np.column_stack([np.ones(len(alloc)), *onehot, *pairs]).astype(np.float64)


def _fit_ridge(x: np.ndarray, action: np.ndarray, reward: np.ndarray, design: np.ndarray,
               ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(B float64 (D, P), c float64 (A,)) minimising sum_t (x_t B psi(a_t) + c_a_t - r_t)^2 + ridge |.|^2."""
    d, p, n_actions = x.shape[1], design.shape[1], design.shape[0]
    phi = np.concatenate([(x[:, :, None] * design[action][:, None, :]).reshape(len(x), d * p),
                          np.eye(n_actions)[action]], axis=1)
    gram = phi.T @ phi + ridge * np.eye(phi.shape[1])
    coef = np.linalg.solve(gram, phi.T @ reward)
    return coef[: d * p].reshape(d, p), coef[d * p:]


def fit_reward_model(features: np.ndarray, action: np.ndarray, reward: np.ndarray, space: AllocationSpace, *,
                     folds: int = DEFAULT_FOLDS, ridge: float = DEFAULT_RIDGE, seed: int = 0) -> np.ndarray:
    """q(x_t, a) for every logged round t and allocation a, float64 (n, A), cross-fitted.

    features: (n, D) contexts; action: int (n,) logged allocations; reward: float (n,). Rounds are
    split into `folds` parts at random (seeded); each part is predicted by the ridge model
    (module docstring) fit on the others.
    """
    if folds < 2:
        raise ValueError(f"`folds` must be >= 2 (cross-fitting), but got {folds}")
    if not ridge > 0:
        raise ValueError(f"`ridge` must be > 0, but got {ridge}")
    x = np.asarray(features, dtype=np.float64)
    action, reward = np.asarray(action, dtype=np.int64), np.asarray(reward, dtype=np.float64)
    if len(x) < folds or action.shape != (len(x),) or reward.shape != (len(x),):
        raise ValueError(f"need >= {folds} rounds with one action and reward each, but got features {x.shape}, "
                         f"action {action.shape}, reward {reward.shape}")
    design = allocation_design(space)
    part = np.random.default_rng(seed).permutation(len(x)) % folds
    q = np.empty((len(x), len(design)))
    for k in range(folds):
        fit, held = part != k, part == k
        b, c = _fit_ridge(x[fit], action[fit], reward[fit], design, ridge)
        q[held] = (x[held] @ b) @ design.T + c[None, :]
    return q


@dataclass(frozen=True, kw_only=True)
class TargetCheck:
    """One target policy: the off-policy estimates from the log next to its measured value.

    measured, measured_lower, measured_upper: the target's mean reward per search over its own run,
    with a normal (1 - alpha) interval. estimates: IPS, SNIPS and DR with their intervals.
    ess: effective sample size of the importance weights, (sum w)^2 / sum w^2. matched: logged
    rounds on which the target's run chose the logged allocation; agreement: the share of those on
    which both runs got the same reward (1 unless the memory strategy's lists differ; NaN if none).
    """

    name: str
    measured: float
    measured_lower: float
    measured_upper: float
    estimates: Mapping[Estimator, Estimate]
    ess: float
    matched: int
    agreement: float

    def covers(self, estimator: Estimator) -> bool:
        """Is the measured value inside this estimator's interval?"""
        e = self.estimates[estimator]
        return e.lower <= self.measured <= e.upper


def mean_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lower, upper) with the normal (1 - alpha) interval of the mean."""
    half = NormalDist().inv_cdf(1 - alpha / 2) * float(values.std(ddof=1)) / math.sqrt(len(values))
    mean = float(values.mean())
    return mean, mean - half, mean + half


def check_target(name: str, log: Records, dist: np.ndarray, q: np.ndarray, measured: Records, *,
                 alpha: float = 0.05) -> TargetCheck:
    """Estimate the target from `log` and compare with its run `measured` on the same searches.

    dist: float64 (n, A, 1), pi_e on the logged contexts; q: float64 (n, A), the reward model.
    ValueError when `measured` is not a run over the logged searches.
    """
    exogenous = ~np.isin(FEATURE_NAMES, HISTORY_FEATURES)  # the query history depends on each run's own feedback
    if len(measured) != len(log) or not np.array_equal(measured.features[:, exogenous], log.features[:, exogenous]):
        raise ValueError(f"`measured` ({measured.policy}) must be a run over the logged searches (same length "
                         f"and contexts), but it differs from the log ({log.policy})")
    logged = logged_feedback(log)
    estimates = {e: estimate_with_ci(e, logged, dist, estimated_rewards=q[:, :, None] if e is Estimator.DR else None,
                                     interval=IntervalConfig(alpha=alpha)) for e in Estimator}
    w = importance_weights(logged, dist)
    same = measured.allocation == log.allocation
    agree = np.isclose(ope_rewards(measured)[same], logged.reward[same], atol=1e-6)
    value, lower, upper = mean_interval(ope_rewards(measured), alpha)
    return TargetCheck(name=name, measured=value, measured_lower=lower, measured_upper=upper, estimates=estimates,
                       ess=float(w.sum() ** 2 / (w ** 2).sum()) if w.any() else 0.0, matched=int(same.sum()),
                       agreement=float(agree.mean()) if agree.size else float("nan"))



@dataclass(frozen=True, kw_only=True, eq=False)
class OffPolicyResult:
    """log: the logger's run; runs: each target's run over the same searches; targets: the checks;
    reward_model_r2: cross-fitted R^2 of q(x_t, a_t) against the logged rewards (DR's model);
    n_allocations: A; train_searches, train_seed: the learned target's training run."""

    log: Records
    runs: Mapping[str, Records]
    targets: tuple[TargetCheck, ...]
    reward_model_r2: float
    n_allocations: int
    train_searches: int
    train_seed: int


def train_policy(entities: Sequence[Entity], root: str | Path, strategies: Sequence[str], config: ExperimentConfig,
                 workdir: str | Path, kind: PolicyKind = PolicyKind.THOMPSON) -> BanditPolicy:
    """A BanditPolicy of `kind` after learning over `config.searches` searches of `config.seed`."""
    trained: list[BanditPolicy] = []

    def factory(names: tuple[str, ...], policy_config: PolicyConfig) -> Allocator:
        trained.append(BanditPolicy(names, DIM, replace(policy_config, kind=kind)))
        return trained[-1]

    run_experiment(entities, root, strategies, [PolicySpec(name=f"{kind.value}-training", kind=None,
                                                           factory=factory)], config, workdir)
    return trained[0]


def _frozen(policy: BanditPolicy) -> PolicySpec:
    def factory(names: tuple[str, ...], policy_config: PolicyConfig) -> Allocator:
        if names != policy.strategies or policy_config.levels != policy.config.levels \
                or policy_config.budget != policy.config.budget:
            raise ValueError(f"the frozen policy is for strategies {policy.strategies}, levels "
                             f"{policy.config.levels}, budget {policy.config.budget}; the run asks for {names}, "
                             f"{policy_config.levels}, {policy_config.budget}")
        return Frozen(policy)
    return PolicySpec(name="frozen", kind=None, factory=factory)


def standard_targets(strategies: tuple[str, ...], config: PolicyConfig,
                     trained: BanditPolicy | None = None) -> dict[str, BanditPolicy]:
    """The targets of the check: `static-rrf` (the equal split), `attribute-only` (when there is an
    attribute strategy: it alone at the largest level within the budget) and, when given,
    `thompson-frozen`. All rank with RRF, like the logger: the ranking is not part of the action,
    so a target ranked otherwise (static-equal's blend) would earn other rewards for the same one."""
    def static(quotas: tuple[int, ...]) -> BanditPolicy:
        return BanditPolicy(strategies, DIM, replace(config, kind=PolicyKind.STATIC, static_quotas=quotas))

    space = AllocationSpace(strategies=strategies, levels=config.levels, budget=config.budget)
    out = {"static-rrf": static(equal_split(space))}
    if "attribute" in strategies:
        alone = max(q for q in config.levels if q <= config.budget)
        out["attribute-only"] = static(tuple(alone if s == "attribute" else 0 for s in strategies))
    if trained is not None:
        out["thompson-frozen"] = trained
    return out


def run_check(entities: Sequence[Entity], root: str | Path, strategies: Sequence[str], config: ExperimentConfig,
              workdir: str | Path, *, train_searches: int | None = None, folds: int = DEFAULT_FOLDS,
              ridge: float = DEFAULT_RIDGE, alpha: float = 0.05) -> OffPolicyResult:
    """The whole check (module docstring) in the allocation space of `config` (levels, budget):

    1. Thompson sampling learns over `train_searches` (default config.searches) searches of seed
       config.seed + 1000, and is frozen;
    2. the uniform logger and every target of `standard_targets` run over the config.searches
       searches of config.seed (the same searches and click uniforms);
    3. DR's reward model is fit on the log, and each target is estimated from the log alone.
    workdir: memory-strategy state of the runs.
    """
    train = replace(config, searches=train_searches or config.searches, seed=config.seed + _TRAIN_SEED_OFFSET)
    trained = train_policy(entities, root, strategies, train, Path(workdir) / "train")
    policy_config = replace(config.policy, levels=config.levels, budget=config.budget)
    targets = standard_targets(tuple(strategies), policy_config, trained)
    specs = [PolicySpec(name=LOGGER, kind=None, factory=UniformAllocator),
             *(replace(_frozen(policy), name=name) for name, policy in targets.items())]
    runs = run_experiment(entities, root, strategies, specs, config, Path(workdir) / "check")
    log = runs.pop(LOGGER)
    space = AllocationSpace(strategies=log.strategies, levels=config.levels, budget=config.budget)
    reward = ope_rewards(log)
    q = fit_reward_model(log.features, log.allocation, reward, space, folds=folds, ridge=ridge, seed=config.seed)
    residual = reward - q[np.arange(len(log)), log.allocation]
    checks = tuple(check_target(name, log, policy_distribution(policy, log.features, config.seed), q, runs[name],
                                alpha=alpha) for name, policy in targets.items())
    return OffPolicyResult(log=log, runs=runs, targets=checks, n_allocations=len(space.allocations),
                           reward_model_r2=float(1.0 - residual.var() / reward.var()),
                           train_searches=train.searches, train_seed=train.seed)
