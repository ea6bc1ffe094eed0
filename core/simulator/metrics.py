"""Per-search records of an experiment run and the measures over them.

Names (issue 13): **target recall**, the primary measure, is the share of searches whose target
(the track the user wanted) is among the candidates; **candidate recall** is the share of the
searches with a satisfying event whose satisfying (acted-on) entity is among the candidates.

Rank measures of the final list go through ir-measures (the dev extra), not our own formulas.
Per search the qrels are: the target grade 2, the rest of the search's relevant set grade 1.
MRR@k is RR(rel=2)@k, the reciprocal rank of the target in the top k (0 when absent), averaged;
nDCG@k is ir-measures' nDCG(gains={0: 0, 1: 1, 2: 3})@k, the exponential gain 2^grade - 1 of
Burges et al. (2005) with trec_eval's discount 1 / log2(rank + 1), so that finding the target
counts three times another relevant track.

Relevant sets hold up to thousands of tracks, so a search keeps only the judged documents that
can change these measures (`bounded_qrels`): the target, the relevant tracks among the shown
top k, and enough other relevant tracks to fill an ideal top k. DCG@k needs only the grades of
the shown top k and the ideal DCG@k only the k largest grades, so both measures are exact on
these at most k + 1 documents (tests/core/simulator/test_metrics.py checks them against
ir-measures on the full qrels). All searches of a run are then measured in one ir-measures call
(`rank_measures`), which costs a fifth of measuring them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.policy.features import DIM

# The rank cutoff of MRR@k and nDCG@k: the listener's visible list (listening.DEFAULT_SHOWN),
# the top 10 a listener sees.
RANK_CUTOFF = 10
TARGET_GRADE, RELEVANT_GRADE = 2, 1
GAINS = {0: 0, RELEVANT_GRADE: 1, TARGET_GRADE: 3}  # 2^grade - 1
NO_DOC = -1  # padding in the ordinal arrays below


def bounded_qrels(shown: np.ndarray, relevant: np.ndarray, target: int, k: int = RANK_CUTOFF
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The judged documents of one search that decide its MRR@k and nDCG@k (module docstring).

    shown: int64 ordinals, best first (only the first k count); relevant: int64 ordinals,
    ascending (the target may or may not be among them); target: an ordinal; k: >= 1.
    Returns (docs int64 (m,), grades int8 (m,)), m <= k + 1, the target first.
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1, but got {k}")
    top = np.asarray(shown, dtype=np.int64)[:k]
    rest = relevant[relevant != target]
    seen = rest[np.isin(rest, top)]
    # The ideal top k holds the target and min(k - 1, |rest|) grade-1 tracks; the unseen ones
    # come from the first k - 1 + |seen| of `rest` (at most |seen| of those are seen).
    need = max(0, min(k - 1, rest.size) - seen.size)
    head = rest[: k - 1 + seen.size]
    fill = head[~np.isin(head, top)][:need]
    docs = np.concatenate([[target], seen, fill]).astype(np.int64)
    grades = np.full(docs.size, RELEVANT_GRADE, dtype=np.int8)
    grades[0] = TARGET_GRADE
    return docs, grades


def rank_measures(shown: np.ndarray, judged: np.ndarray, grades: np.ndarray, k: int = RANK_CUTOFF
                  ) -> np.ndarray:
    """float64 (N, 2): RR(rel=2)@k and nDCG(gains=GAINS)@k of N searches through ir-measures.

    shown: int (N, >= k), ordinals best first, padded with NO_DOC; judged, grades: int (N, m) and
    int8 (N, m), each row's qrels (bounded_qrels), padded with NO_DOC. A search with nothing
    shown scores 0 on both (ir-measures leaves such a query out).
    """
    import ir_measures  # the dev extra; only measuring needs it
    from ir_measures import RR, nDCG

    measures = [RR(rel=TARGET_GRADE) @ k, nDCG(gains=GAINS) @ k]
    qrels = {str(i): {str(d): int(g) for d, g in zip(row, grow, strict=True) if d != NO_DOC}
             for i, (row, grow) in enumerate(zip(judged.tolist(), grades.tolist(), strict=True))}
    # Distinct decreasing scores keep the shown order (trec_eval breaks ties by document id).
    run = {str(i): {str(d): float(k - r) for r, d in enumerate(row[:k]) if d != NO_DOC}
           for i, row in enumerate(shown.tolist())}
    out = np.zeros((len(qrels), 2))
    for m in ir_measures.iter_calc(measures, qrels, {q: docs for q, docs in run.items() if docs}):
        out[int(m.query_id), measures.index(m.measure)] = m.value
    return out


@dataclass(frozen=True, kw_only=True)
class Records:
    """One row per search of one policy run (N searches, S strategies, cutoff k).

    intent: int8 (N,), core.simulator.users.Intent; quotas: int16 (N, S); fetched: int32 (N,),
    candidates the strategies returned; candidates: int32 (N,), distinct candidates after merge;
    called: int8 (N,), strategies called; target_found: bool (N,), the target is a candidate
    (target recall); feedback: bool (N,), the search had a satisfying event (core.reward);
    acted_found: bool (N,), the satisfying entity is a candidate (candidate recall; False without
    feedback); shown: int32 (N, k), the final top k ordinals, NO_DOC-padded; judged, grades: int32
    and int8 (N, k + 1), the search's bounded qrels (bounded_qrels), NO_DOC-padded; measured:
    float32 (N, 2), RR and nDCG of the top k (module docstring), NaN until measured (rr, ndcg
    measure pending rows in one batch); reward: float32 (N,), the reward the policy learned (NaN
    without feedback); propensity: float32 (N,); regret: float32 (N,), against the oracle (runner
    docstring); allocation: int32 (N,), the chosen allocation's index in the policy's
    AllocationSpace; features: float32 (N, DIM), the context the policy decided on
    (core.policy.features; float32 to keep long runs small). The last two are what off-policy
    evaluation needs (core.simulator.offpolicy).
    """

    policy: str
    strategies: tuple[str, ...]
    intent: np.ndarray
    quotas: np.ndarray
    fetched: np.ndarray
    candidates: np.ndarray
    called: np.ndarray
    target_found: np.ndarray
    feedback: np.ndarray
    acted_found: np.ndarray
    shown: np.ndarray
    judged: np.ndarray
    grades: np.ndarray
    measured: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    regret: np.ndarray
    allocation: np.ndarray
    features: np.ndarray

    @classmethod
    def empty(cls, policy: str, strategies: tuple[str, ...], n: int) -> Records:
        """N rows of nothing: no candidates, nothing shown (RR and nDCG 0), no feedback; the
        cutoff k is RANK_CUTOFF."""
        k = RANK_CUTOFF
        f32 = {name: np.zeros(n, dtype=np.float32) for name in ("propensity", "regret")}
        return cls(policy=policy, strategies=strategies, intent=np.zeros(n, dtype=np.int8),
                   quotas=np.zeros((n, len(strategies)), dtype=np.int16), fetched=np.zeros(n, dtype=np.int32),
                   candidates=np.zeros(n, dtype=np.int32), called=np.zeros(n, dtype=np.int8),
                   target_found=np.zeros(n, dtype=bool), feedback=np.zeros(n, dtype=bool),
                   acted_found=np.zeros(n, dtype=bool), shown=np.full((n, k), NO_DOC, dtype=np.int32),
                   judged=np.full((n, k + 1), NO_DOC, dtype=np.int32), grades=np.zeros((n, k + 1), dtype=np.int8),
                   measured=np.zeros((n, 2), dtype=np.float32), reward=np.full(n, np.nan, dtype=np.float32),
                   allocation=np.zeros(n, dtype=np.int32), features=np.zeros((n, DIM), dtype=np.float32), **f32)

    def __len__(self) -> int:
        return int(self.intent.shape[0])

    @property
    def k(self) -> int:
        """The rank cutoff of rr and ndcg."""
        return int(self.shown.shape[1])

    def set_ranking(self, t: int, shown: np.ndarray, relevant: np.ndarray, target: int) -> None:
        """Row t's final ranking (int64 ordinals, best first) and bounded qrels; measured later."""
        top = np.asarray(shown, dtype=np.int64)[: self.k]
        docs, grades = bounded_qrels(top, relevant, target, self.k)
        self.shown[t], self.judged[t], self.grades[t] = NO_DOC, NO_DOC, 0
        self.shown[t, : top.size] = top
        self.judged[t, : docs.size], self.grades[t, : docs.size] = docs, grades
        self.measured[t] = np.nan

    def _measure(self) -> np.ndarray:
        pending = np.flatnonzero(np.isnan(self.measured[:, 0]))
        if pending.size:
            self.measured[pending] = rank_measures(self.shown[pending], self.judged[pending],
                                                   self.grades[pending], self.k)
        return self.measured

    @property
    def rr(self) -> np.ndarray:
        """float32 (N,): RR(rel=2)@k, the reciprocal rank of the target in the top k (0 if absent)."""
        return self._measure()[:, 0]

    @property
    def ndcg(self) -> np.ndarray:
        """float32 (N,): nDCG@k with the target grade 2, the rest of the relevant set grade 1."""
        return self._measure()[:, 1]

    def summary(self, mask: np.ndarray | None = None) -> dict[str, float]:
        """Means over the searches (or those where `mask`, bool (N,), holds); regret is summed.
        candidate_recall and reward are over the searches with feedback (NaN when none has)."""
        m = np.ones(len(self), dtype=bool) if mask is None else mask
        fb = m & self.feedback
        return {
            "searches": float(m.sum()),
            "target_recall": float(self.target_found[m].mean()),
            "candidate_recall": float(self.acted_found[fb].mean()) if fb.any() else float("nan"),
            f"mrr@{self.k}": float(self.rr[m].mean()),
            f"ndcg@{self.k}": float(self.ndcg[m].mean()),
            "fetched": float(self.fetched[m].mean()),
            "candidates": float(self.candidates[m].mean()),
            "strategies_called": float(self.called[m].mean()),
            "feedback_rate": float(fb.sum() / max(m.sum(), 1)),
            "reward": float(np.nanmean(self.reward[fb])) if fb.any() else float("nan"),
            "cumulative_regret": float(self.regret[m].sum(dtype=np.float64)),
        }
