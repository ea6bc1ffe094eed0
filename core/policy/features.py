"""Query and context features for the policy: a fixed-length float64 vector.

Layout (FEATURE_NAMES gives the names, in order):
- bias;
- query shape: token count one-hot (1, 2, 3-4, 5+), has a digit, has a quote or a dash;
- query understanding (from the attribute strategy, when it answered in time): likelihood of the
  top interpretation, whether it has an artist / title / album / playlist / genre / decade / mood
  slot, whether it leaves no free text, and how many interpretations there are (/ 8, capped at 1);
  then, over all interpretations, the likelihood mass of those with a slot of each group and of
  those with no slot at all (how sure query understanding is that the query names a thing);
- time: hour of day as sin and cos (0 when unknown), weekend;
- device one-hot (mobile, desktop, speaker, tv);
- strongest user affinity given in the context (max of "affinity.*" values, clipped to [0, 1]);
- the query's own history (core.policy.history: feedback volume, miss rate, diversity of the
  acted-on entities), 0 without one.

CONTEXT_FEATURES are the time, device and affinity features: logged with every decision, but the
default policy leaves them out of its hit model (PolicyConfig.ignored_features), since they did not
predict which strategies retrieve the acted-on entity in the experiment and only slowed learning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from core.policy.history import HISTORY_FEATURES, QueryHistory
from core.types import Interpretation

DEVICES = ("mobile", "desktop", "speaker", "tv")
SLOT_GROUPS = {"artist": ("artist",), "title": ("title", "track"), "album": ("album",), "playlist": ("playlist",),
               "genre": ("genre", "subgenre"),
               "decade": ("decade", "year", "release_date"), "mood": ("mood", "tempo", "danceability", "energy")}
FEATURE_NAMES = (
    "bias", "tokens_1", "tokens_2", "tokens_3_4", "tokens_5_plus", "has_digit", "has_punctuation",
    "qu_likelihood", *(f"qu_slot_{g}" for g in SLOT_GROUPS), "qu_no_free_text", "qu_interpretations",
    *(f"qu_mass_{g}" for g in SLOT_GROUPS), "qu_mass_no_slot",
    "hour_sin", "hour_cos", "weekend", *(f"device_{d}" for d in DEVICES), "affinity_max",
    *HISTORY_FEATURES,
)
DIM = len(FEATURE_NAMES)
_GROUP_OF = {f: k for k, group in enumerate(SLOT_GROUPS.values()) for f in group}  # slot field -> its group
CONTEXT_FEATURES = ("hour_sin", "hour_cos", "weekend", *(f"device_{d}" for d in DEVICES), "affinity_max")


def _number(context: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(context[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _groups(interpretation: Interpretation) -> set[int]:
    """The SLOT_GROUPS (by position) that `interpretation` has a slot of."""
    return {k for s in interpretation.slots if (k := _GROUP_OF.get(s.field)) is not None}


def featurize(text: str, context: Mapping[str, str], interpretations: Sequence[Interpretation] = (),
              history: QueryHistory | None = None) -> np.ndarray:
    """float64, shape (DIM,). Unknown or malformed context values count as absent; no `history`,
    a query never seen."""
    x = np.zeros(DIM)
    x[0] = 1.0
    n_tokens = len(text.split())
    x[1 + (0 if n_tokens <= 1 else 1 if n_tokens == 2 else 2 if n_tokens <= 4 else 3)] = 1.0
    x[5] = float(any(c.isdigit() for c in text))
    x[6] = float(any(c in "\"'-&:" for c in text))
    n_groups = len(SLOT_GROUPS)
    if interpretations:
        top = max(interpretations, key=lambda i: i.likelihood)
        x[7] = top.likelihood
        for k in _groups(top):
            x[8 + k] = 1.0
        x[8 + n_groups] = float(not top.free_text and bool(top.slots))
        x[9 + n_groups] = min(1.0, len(interpretations) / 8)
        mass = 10 + n_groups
        for interp in interpretations:
            for k in _groups(interp):
                x[mass + k] += interp.likelihood
            if not interp.slots:
                x[mass + n_groups] += interp.likelihood
        x[mass: mass + n_groups + 1] = np.minimum(x[mass: mass + n_groups + 1], 1.0)
    t = FEATURE_NAMES.index("hour_sin")
    hour = _number(context, "hour")
    if hour is not None:
        x[t], x[t + 1] = math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)
    weekday = _number(context, "weekday")
    x[t + 2] = float(weekday is not None and weekday >= 5)
    device = context.get("device", "")
    if device in DEVICES:
        x[t + 3 + DEVICES.index(device)] = 1.0
    affinities = [v for k in context if k.startswith("affinity.") and (v := _number(context, k)) is not None]
    a = FEATURE_NAMES.index("affinity_max")
    x[a] = min(1.0, max(0.0, max(affinities))) if affinities else 0.0
    if history is not None:
        x[a + 1:] = history.features(text)
    return x
