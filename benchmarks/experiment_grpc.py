"""The LTR&R experiment over gRPC (issue 6): the simulated users of core.simulator against a real cluster.

    run_grpc(entities, root, strategies, specs, config, workdir) -> {policy name: GrpcRecords}

The same users and searches (core.simulator.runner.simulated_searches: same seed, same searches),
the same listener and its uniforms (user_action, click_generator) and the same measures
(core.simulator.metrics.Records) as the in-process runner, but every search goes through the
real broker. Per search t:

1. Target hits: is the target in strategy s's top-q, and how many candidates that list holds,
   for every level q, asked of the shards themselves (services.client.ShardClient): lexical,
   attribute and memory once at the largest level (their top-q is the prefix of their top-Q),
   semantic once per level (HNSW's top-q is not; core.simulator.retrieval). Lexical, semantic and
   attribute answers are cached by text, as their indexes do not change; the memory shard is asked
   afresh, so its current state is used. From these, core.simulator.runner.target_rewards and
   oracle_allocation give the oracle and the regret.
2. Search(text, context = SimSearch.context, k, budget_ms, return_candidates) at the broker: the
   ranked top k and every merged candidate (SearchResponse.candidates), from which candidate recall
   is measured; the broker runs core.pipeline as it does in production.
3. The simulated listener (core.simulator.runner.user_action) reacts to the ranked results; every
   event goes back as Feedback, in order (PLAY with the fraction listened, SKIP, REFORMULATE naming
   the target). The broker computes the rewards, logs the events, teaches its policy the first
   satisfying one (recorded with the reward it answered) and forwards the satisfying ones to the
   memory shard, as in production.

How it differs from the in-process mode:
- Latency is real. The broker's policy sees measured shard latencies and its reward charges them.
  Regret keeps the in-process LatencyModel for every allocation (the oracle's allocation was never
  run, so its latency cannot be measured), so regret means the same in both modes and does not
  depend on the machine's load. The measured Search round trips are in GrpcRecords.
- The broker draws its policy's randomness from its own generator (seeded with config.seed), so
  decisions differ from the in-process run of the same seed; the searches and the listeners' uniforms do not.
- Feedback reaches the memory shard through the broker's outbox (services.outbox), in batches as
  the log grows, stamped with the wall clock (the in-process mode batches `learn_every` events on
  a simulated clock).
- Records.features, allocation, propensity and fetched are read from the broker's own decision
  log once its plan is over (PlanRun.finish): what the broker decided and logged is what is
  measured, with core.simulator.runner.record_search, as in process.
- Only plans the broker can run: a BanditPolicy kind. The oracle and factory plans (external
  allocators) run in process only.

Processes: the shards whose indexes do not change (lexical, semantic, attribute) start once; each
plan gets a fresh memory shard and a fresh broker over WORKDIR/grpc-<seed>-<plan>/{memory,broker},
so no learning leaks between plans. Everything started is stopped (SIGTERM) also on errors, and a
process that does not exit with code 0 fails the run. This lives in benchmarks/, not services/: it
joins the simulator to the clients for an experiment, and serving never needs it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from core.catalog import Entity, write_jsonl
from core.collapse import recording_copies
from core.eventlog import EventLog
from core.pipeline import acted_ranks
from core.policy.allocation import AllocationSpace
from core.ranking import EntityTable
from core.reward import satisfies
from core.simulator.listening import Reaction
from core.simulator.metrics import Records
from core.simulator.policies import PolicySpec
from core.simulator.retrieval import CACHED_KINDS, level_tables
from core.simulator.runner import (
    ExperimentConfig,
    as_target,
    click_generator,
    record_feedback,
    record_search,
    simulated_searches,
    target_rewards,
    user_action,
)
from core.simulator.users import SimSearch, SimulatorConfig, UserSimulator
from core.types import StrategyKind
from ltrr.v1 import broker_pb2
from services.broker_config import EVENTS_FILE
from services.cli_broker import policy_settings
from services.client import BrokerClient, ShardClient
from services.cluster import ClusterConfig, broker_args
from services.process import ServerProcess, shard_args, spawn

DEFAULT_BUDGET_MS = 500  # generous: the experiment measures retrieval plans, not timeouts (counted anyway)
HOST = "127.0.0.1"
MEMORY = StrategyKind.MEMORY.value
OK = broker_pb2.STRATEGY_STATUS_OK


@dataclass(frozen=True, kw_only=True)
class GrpcRecords(Records):
    """Records plus what only a real cluster has. search_ms: float32 (N,), the client's Search
    round trip; took_ms: float32 (N,), the broker's own time; degraded: bool (N,), a called
    strategy timed out or failed; seconds: wall time of the plan's whole search loop (target hits,
    Search and Feedback; process start-up excluded)."""

    search_ms: np.ndarray
    took_ms: np.ndarray
    degraded: np.ndarray
    seconds: float = 0.0

    @classmethod
    def empty(cls, policy: str, strategies: tuple[str, ...], n: int) -> GrpcRecords:
        base = Records.empty(policy, strategies, n)
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(Records)},
                   search_ms=np.zeros(n, dtype=np.float32), took_ms=np.zeros(n, dtype=np.float32),
                   degraded=np.zeros(n, dtype=bool))

    def summary(self, mask: np.ndarray | None = None) -> dict[str, float]:
        """Records.summary plus the Search round trip's p50 and p99 (ms), the degraded share and
        the plan's searches/s (over all searches, whatever `mask`)."""
        m = np.ones(len(self), dtype=bool) if mask is None else mask
        ms = self.search_ms[m]
        return {**super().summary(mask),
                "search_ms_p50": float(np.percentile(ms, 50)) if ms.size else float("nan"),
                "search_ms_p99": float(np.percentile(ms, 99)) if ms.size else float("nan"),
                "degraded_rate": float(self.degraded[m].mean()) if m.any() else float("nan"),
                "searches_per_s": len(self) / self.seconds if self.seconds > 0 else float("nan")}


def broker_settings(spec: PolicySpec, config: ExperimentConfig, strategies: Sequence[str]) -> dict[str, str]:
    """`ltrr broker --set` pairs that make the broker's policy the one `spec` runs in process:
    kind, levels, budget, static quotas (reordered to the broker's strategy order), every
    PolicyConfig setting (services.cli_broker.policy_settings: every field), the ranker and the
    seed. ValueError for a plan the broker cannot run."""
    if spec.kind is None:
        raise ValueError(f"plan {spec.name!r} has no broker policy: the oracle and external allocators "
                         "run in process only")
    if spec.teach_target:
        raise ValueError(f"plan {spec.name!r} is taught each search's target, which a broker never learns: "
                         "it runs in process only")
    order = broker_order(strategies)
    quotas = dict(zip(strategies, spec.static_quotas, strict=True)) if spec.static_quotas else {}
    policy = replace(config.policy, kind=spec.kind, levels=config.levels, budget=config.budget,
                     static_quotas=tuple(quotas[s] for s in order) if quotas else ())
    return {**policy_settings(policy), "ranker": spec.ranker.value, "seed": str(config.seed)}


def broker_order(strategies: Sequence[str]) -> tuple[str, ...]:
    """The broker's strategy order (services.broker.BrokerConfig: StrategyKind order)."""
    return tuple(k.value for k in StrategyKind if k.value in strategies)


def _spawn_all(args: Sequence[Sequence[str]], logs: Path) -> list[ServerProcess]:
    """Start the servers in parallel (start-up is mostly index loading); if any fails, stop the rest."""
    with ThreadPoolExecutor(max_workers=max(len(args), 1)) as pool:
        futures = [pool.submit(spawn, a, log_dir=str(logs)) for a in args]
    errors = [e for f in futures if (e := f.exception()) is not None]
    started = [f.result() for f in futures if f.exception() is None]
    if errors:
        for server in started:
            server.stop()
        raise errors[0]
    return started


class PlanCluster:
    """The shards whose indexes do not change, started once; per plan a fresh memory shard and
    broker. exit_codes: every stopped process's exit code, by label."""

    def __init__(self, root: Path, strategies: Sequence[str], catalog: Path, logs: Path) -> None:
        self.root, self.names, self.catalog, self.logs = root, tuple(strategies), catalog, logs
        self.static: dict[str, ServerProcess] = {}
        self.plan: dict[str, ServerProcess] = {}
        self.exit_codes: dict[str, int] = {}

    def start_static(self) -> None:
        names = [n for n in self.names if n != MEMORY]
        servers = _spawn_all([shard_args(n, self.root, extra=["--host", HOST]) for n in names], self.logs)
        self.static = dict(zip(names, servers, strict=True))

    def start_plan(self, state: Path, settings: Mapping[str, str]) -> dict[str, str]:
        """A fresh memory shard (if used) and broker with their state under `state`; every address
        by strategy name, and the broker's under "broker"."""
        if MEMORY in self.names:
            options = {"state_dir": str(state / "memory")}
            self.plan[MEMORY] = spawn(shard_args(MEMORY, self.root, options, ["--host", HOST]), log_dir=str(self.logs))
        shards = {n: s.address for n, s in {**self.static, **self.plan}.items()}
        config = ClusterConfig(catalog=str(self.catalog), index=str(self.root), state=str(state / "broker"),
                               host=HOST, strategies=self.names, broker=settings)
        self.plan["broker"] = spawn(broker_args(config, shards, 0), log_dir=str(self.logs))
        return {n: s.address for n, s in {**self.static, **self.plan}.items()}

    def stop_plan(self, label: str) -> None:
        for name in sorted(self.plan, key=lambda n: n != "broker"):  # the broker first: it flushes to memory
            self.exit_codes[f"{label}/{name}"] = self.plan.pop(name).stop()

    def stop(self) -> dict[str, int]:
        self.stop_plan("unfinished")
        for name in list(self.static):
            self.exit_codes[name] = self.static.pop(name).stop()
        return self.exit_codes


class ShardProbe:
    """What the in-process runner computes from its strategies, asked of the running shards:
    target hits and list sizes per level (module docstring, step 1)."""

    def __init__(self, clients: Mapping[str, ShardClient], strategies: Sequence[str], levels: Sequence[int],
                 cache: dict[tuple[str, str, int], list[str]]) -> None:
        self.clients, self.names, self.levels = clients, tuple(strategies), np.asarray(levels)
        self.cache = cache  # (strategy, text, quota) -> entity ids; shared by the plans of a run

    def top_ids(self, name: str, text: str, quota: int, context: Mapping[str, str] | None = None) -> list[str]:
        """Strategy `name`'s top `quota` entity ids for `text`, asked with the search's `context`
        (the memory shard learns per context; the cached strategies ignore it)."""
        key = (name, text, quota)
        if StrategyKind(name) in CACHED_KINDS and key in self.cache:
            return self.cache[key]
        ids = [c.entity_id for c in self.clients[name].retrieve(text, quota, context=dict(context or {})).candidates]
        if StrategyKind(name) in CACHED_KINDS:
            self.cache[key] = ids
        return ids

    def level_tables(self, text: str, targets: frozenset[str], context: Mapping[str, str] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(hits bool (S, L), returned int64 (S, L)): is one of `targets` (the wanted recording's
        copies) in strategy s's top-levels[l] list for `text` and `context`, and how many
        candidates that list holds (core.simulator.retrieval.level_tables)."""
        return level_tables([(StrategyKind(name), partial(self.top_ids, name, text, context=context))
                             for name in self.names], self.levels, targets)


@dataclass(frozen=True, kw_only=True)
class Setting:
    """What every plan of one run shares. ids: entity ids by ordinal; ordinal: the inverse;
    copies: per ordinal with copies, every copy of its recording (core.collapse.recording_copies)."""

    config: ExperimentConfig
    strategies: tuple[str, ...]
    ids: Sequence[str]
    ordinal: Mapping[str, int]
    searches: Sequence[SimSearch]
    users: UserSimulator
    budget_ms: int
    copies: Mapping[int, frozenset[int]]

    def recording(self, ordinal: int) -> frozenset[int]:
        """The ordinals of `ordinal`'s recording, itself included."""
        return self.copies.get(ordinal, frozenset((ordinal,)))


@dataclass(frozen=True, slots=True)
class ClientView:
    """What the client saw of search t; the rest of its row comes from the broker's decision log."""

    t: int
    decision_id: str
    shown: np.ndarray
    candidates: int
    target_found: bool
    rewards: np.ndarray
    acted: str = ""  # the entity of the first satisfying event ("" without one)
    reward: float = 0.0  # what the broker's Feedback answered for it


class PlanRun:
    """One plan over the run's searches against its broker (module docstring, steps 1-3). The rows
    of what the broker decided (features, allocation, propensity, fetched) are filled from its
    decision log once it has stopped (`finish`): what it logged is what is measured."""

    def __init__(self, setting: Setting, probe: ShardProbe, client: BrokerClient) -> None:
        c = setting.config
        self.setting, self.probe, self.client = setting, probe, client
        self.space = AllocationSpace(strategies=setting.strategies, levels=c.levels, budget=c.budget)
        self.latency = c.latency.table(setting.strategies, c.levels)
        self.listener, self.click_rng = c.listener(), click_generator(c.seed)
        self.served: list[ClientView] = []

    def search(self, sim: SimSearch) -> tuple[broker_pb2.SearchResponse, float]:
        """The broker's answer with every candidate, and the round trip in ms."""
        started = time.perf_counter()
        response = self.client.search(sim.text, k=self.setting.config.k, budget_ms=self.setting.budget_ms,
                                      context=sim.context, return_candidates=True)
        return response, (time.perf_counter() - started) * 1000

    def step(self, t: int, sim: SimSearch, rec: GrpcRecords) -> None:
        setting = self.setting
        ids, config = setting.ids, setting.config
        copies = setting.recording(sim.target)
        wanted = frozenset(ids[o] for o in copies)
        hits, returned = self.probe.level_tables(sim.text, wanted, sim.context)
        rewards = target_rewards(self.space, hits, returned, self.latency, config.policy)
        response, rec.search_ms[t] = self.search(sim)
        candidates = {c.entity_id for c in response.candidates}
        shown = np.array([setting.ordinal[r.entity_id] for r in response.results], dtype=np.int64)
        reactions = user_action(self.listener, setting.users, sim, shown, self.click_rng, copies)
        rec.took_ms[t], rec.degraded[t] = response.took_ms, response.degraded
        acted, reward = self.feedback(response.decision_id, reactions)
        found = not wanted.isdisjoint(candidates)
        self.served.append(ClientView(t, response.decision_id, shown, len(candidates), found, rewards, acted, reward))

    def feedback(self, decision_id: str, reactions: list[Reaction]) -> tuple[str, float]:
        """Send every event of a search, in order; (entity, reward) of the first satisfying one,
        the one the broker teaches its policy (("", 0.0) without one)."""
        acted, reward = "", 0.0
        for i, r in enumerate(reactions):
            entity = self.setting.ids[r.entity]
            answer = self.client.feedback(decision_id, entity, int(r.type), value=r.value,
                                          event_id=f"{decision_id}:{i}")
            if not acted and satisfies(r.type, r.value, entity, satisfied_fraction=self.listener.satisfied_fraction):
                acted, reward = entity, answer.reward
        return acted, reward

    def finish(self, rec: GrpcRecords, event_log: EventLog) -> None:
        """Fill every search's row from the decision the broker logged for it (core.simulator.runner's
        record_search and record_feedback)."""
        for s in self.served:
            record = event_log.decision(s.decision_id)
            sim = self.setting.searches[s.t]
            shown = as_target(s.shown, sim.target, self.setting.recording(sim.target))
            record_search(rec, s.t, sim, record, shown, s.candidates, s.target_found,
                          s.rewards, self.space, self.setting.config)
            if s.acted:  # retrieved as core.pipeline judges it: in some strategy's logged list
                record_feedback(rec, s.t, s.reward, any(acted_ranks(record, s.acted)))


@contextmanager
def _clients(addresses: Mapping[str, str], strategies: Sequence[str]) -> Iterator[tuple[BrokerClient,
                                                                                       dict[str, ShardClient]]]:
    with ExitStack() as stack:
        shards = {n: stack.enter_context(ShardClient(addresses[n])) for n in strategies}
        yield stack.enter_context(BrokerClient(addresses["broker"])), shards


def run_plan(spec: PolicySpec, setting: Setting, cluster: PlanCluster, state: Path,
             cache: dict[tuple[str, str, int], list[str]]) -> GrpcRecords:
    """`spec` over the run's searches on a fresh memory shard and broker with state under `state`
    (which must not exist yet); both are stopped before returning, also on errors."""
    settings = broker_settings(spec, setting.config, setting.strategies)
    state.mkdir(parents=True, exist_ok=False)
    try:
        addresses = cluster.start_plan(state, settings)
        with _clients(addresses, setting.strategies) as (broker, shards):
            run = PlanRun(setting, ShardProbe(shards, setting.strategies, setting.config.levels, cache), broker)
            rec = GrpcRecords.empty(spec.name, setting.strategies, len(setting.searches))
            started = time.perf_counter()
            for t, sim in enumerate(setting.searches):
                run.step(t, sim, rec)
            seconds = time.perf_counter() - started
    finally:
        cluster.stop_plan(spec.name)
    with EventLog(state / "broker" / EVENTS_FILE) as event_log:
        run.finish(rec, event_log)
    return replace(rec, seconds=seconds)


def run_grpc(entities: Sequence[Entity], root: str | os.PathLike[str], strategies: Sequence[str],
             specs: Sequence[PolicySpec], config: ExperimentConfig, workdir: str | os.PathLike[str],
             simulator: SimulatorConfig | None = None, *, budget_ms: int = DEFAULT_BUDGET_MS,
             index_entities: Sequence[Entity] | None = None) -> dict[str, GrpcRecords]:
    """Every spec over the same `config.searches` searches (seeded by config.seed) through a real
    cluster over the index at `root`: the shape of core.simulator.runner.run_experiment. The users
    search `entities` (the truth); index_entities: the catalog `root` was built from and the broker
    reads (same ids and order; core.simulator.metadata.noisy_catalog), `entities` when None.
    workdir: the catalog the broker reads, process logs, and per plan
    WORKDIR/grpc-<seed>-<plan>/{broker,memory}. budget_ms: each Search's latency budget.
    RuntimeError if a process does not stop cleanly (exit code 0 on SIGTERM)."""
    for spec in specs:
        broker_settings(spec, config, strategies)  # refuse a plan the broker cannot run before starting anything
    work = Path(workdir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    indexed = entities if index_entities is None else index_entities
    if [e.id for e in indexed] != [e.id for e in entities]:
        raise ValueError("`index_entities` must hold the ids of `entities` in the same order (ordinals are shared)")
    write_jsonl(indexed, work / "catalog.jsonl")
    users, searches = simulated_searches(entities, config, simulator)
    ids = [e.id for e in entities]
    setting = Setting(config=config, strategies=tuple(strategies), ids=ids, ordinal={e: i for i, e in enumerate(ids)},
                      searches=searches, users=users, budget_ms=budget_ms,
                      copies=recording_copies(EntityTable.from_entities(entities).recording_keys))
    cluster = PlanCluster(Path(root), strategies, work / "catalog.jsonl", work / "logs")
    cache: dict[tuple[str, str, int], list[str]] = {}
    try:
        cluster.start_static()
        out = {spec.name: run_plan(spec, setting, cluster, work / f"grpc-{config.seed}-{spec.name}", cache)
               for spec in specs}
    finally:
        codes = cluster.stop()
    unclean = {name: code for name, code in codes.items() if code != 0}
    if unclean:
        raise RuntimeError(f"processes did not stop cleanly (exit codes {unclean}); logs in {work / 'logs'}")
    return out


TIMING = (("search_ms_p50", "Search p50 ms"), ("search_ms_p99", "Search p99 ms"), ("degraded_rate", "degraded"),
          ("searches_per_s", "searches/s"))


def timing_table(policies: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Markdown: per plan, the measured Search round trip, the degraded share and searches/s of the
    whole loop (mean ± 95% CI over seeds). policies: plan -> GrpcRecords.summary() per seed."""
    from benchmarks.experiment import fmt, markdown

    rows = [[name, *(fmt([s[k] for s in runs]) for k, _ in TIMING)] for name, runs in policies.items()]
    return markdown(rows, ["measured over gRPC", *(label for _, label in TIMING)])
