"""Per-search records of an experiment run and the measures over them.

Relevance grades: the target (the track the user wants) 2, the rest of the search's relevant set
1, everything else 0. nDCG@k (core.metrics.ndcg_at_k) uses the exponential gain 2^g - 1 and the
discount 1 / log2(r + 1) (Burges et al. 2005, the form trec_eval's ndcg_cut and ir-measures' nDCG@k
compute with these gains); the ideal list puts the target first and then min(k - 1, |relevant| - 1)
grade-1 tracks.
Reciprocal rank is that of the target within the top k (0 when absent): MRR@k over searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.metrics import ndcg_at_k
from core.policy.features import DIM


def reciprocal_rank(shown: np.ndarray, target: int) -> float:
    """1 / (1-based rank of `target` in `shown`), 0 when absent. shown: int64 ordinals, best first."""
    hit = np.flatnonzero(shown == target)
    return 1.0 / (hit[0] + 1) if hit.size else 0.0


def ndcg_at(shown: np.ndarray, relevant: np.ndarray, target: int, k: int = 10) -> float:
    """nDCG@k of the ranked ordinals `shown` (int64, best first) for the grades above.
    relevant: int64 ordinals, ascending, holding `target`. k: >= 1."""
    top = shown[:k]
    gains = np.isin(top, relevant).astype(np.float64)  # 2^1 - 1
    gains[top == target] = 3.0  # 2^2 - 1
    ideal = np.ones(min(k, max(relevant.size, 1)))  # the k best of the relevant set suffice
    ideal[0] = 3.0
    return ndcg_at_k(gains, ideal, k)


@dataclass(frozen=True, kw_only=True)
class Records:
    """One row per search of one policy run (N searches, S strategies).

    intent: int8 (N,), core.simulator.users.Intent; quotas: int16 (N, S); fetched: int32 (N,),
    candidates the strategies returned; candidates: int32 (N,), distinct candidates after merge;
    called: int8 (N,), strategies called; target_found: bool (N,), the target is a candidate
    (candidate recall); feedback: bool (N,), the user acted; acted_found: bool (N,), the acted-on
    entity is a candidate (False without feedback); rr, ndcg: float32 (N,), of the target in the top
    k after ranking; reward: float32 (N,), core.reward.search_reward of the action (NaN without
    feedback); propensity: float32 (N,); regret: float32 (N,), against the oracle (runner docstring);
    allocation: int32 (N,), the chosen allocation's index in the policy's AllocationSpace; features:
    float32 (N, DIM), the context the policy decided on (core.policy.features; float32 to keep long
    runs small). The last two are what off-policy evaluation needs (core.simulator.offpolicy).
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
    rr: np.ndarray
    ndcg: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    regret: np.ndarray
    allocation: np.ndarray
    features: np.ndarray

    @classmethod
    def empty(cls, policy: str, strategies: tuple[str, ...], n: int) -> Records:
        f32 = {k: np.zeros(n, dtype=np.float32) for k in ("rr", "ndcg", "propensity", "regret")}
        return cls(policy=policy, strategies=strategies, intent=np.zeros(n, dtype=np.int8),
                   quotas=np.zeros((n, len(strategies)), dtype=np.int16), fetched=np.zeros(n, dtype=np.int32),
                   candidates=np.zeros(n, dtype=np.int32), called=np.zeros(n, dtype=np.int8),
                   target_found=np.zeros(n, dtype=bool), feedback=np.zeros(n, dtype=bool),
                   acted_found=np.zeros(n, dtype=bool), reward=np.full(n, np.nan, dtype=np.float32),
                   allocation=np.zeros(n, dtype=np.int32), features=np.zeros((n, DIM), dtype=np.float32), **f32)

    def __len__(self) -> int:
        return int(self.intent.shape[0])

    def summary(self, mask: np.ndarray | None = None) -> dict[str, float]:
        """Means over the searches (or those where `mask`, bool (N,), holds); regret is summed."""
        m = np.ones(len(self), dtype=bool) if mask is None else mask
        fb = m & self.feedback
        return {
            "searches": float(m.sum()),
            "candidate_recall": float(self.target_found[m].mean()),
            "mrr@10": float(self.rr[m].mean()),
            "ndcg@10": float(self.ndcg[m].mean()),
            "fetched": float(self.fetched[m].mean()),
            "candidates": float(self.candidates[m].mean()),
            "strategies_called": float(self.called[m].mean()),
            "feedback_rate": float(fb.sum() / max(m.sum(), 1)),
            "acted_recall": float(self.acted_found[fb].mean()) if fb.any() else float("nan"),
            "reward": float(np.nanmean(self.reward[fb])) if fb.any() else float("nan"),
            "cumulative_regret": float(self.regret[m].sum(dtype=np.float64)),
        }
