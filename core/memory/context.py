"""The context bucket of a search: which kind of user asked, as the memory strategy keys it.

A vague query ("late night music", "chill") wants different things from different users, so the
memory strategy learns every pair twice: under the query's key (core.analysis.text_key) and under
a contextual key, the query's key plus the bucket of the request context (core.memory.index).

The bucket is read from the context (protos/ltrr/v1/common.proto Query.context) by a tuple of
names (MemoryConfig.context_keys), one part per name that the context supplies, joined by "|":
- a name the context has as a key (e.g. "device") gives "device=<value>" (value folded by text_key);
- otherwise, the keys "<name>.<rest>" whose value is a finite number > 0 are weights (affinities),
  and the largest one gives "<name>.<field>=<value>" (ties: the smallest key). Two spellings of
  affinities are read alike: the documented "affinity.<field>.<value>" ("affinity.genre.rock" =
  "0.8", what core.simulator.users sends) and the shorthand "affinity.<value>" ("affinity.rock"),
  which names a genre (SHORTHAND_FIELD), so both give the bucket "affinity.genre=rock".
A context that supplies none of the names has no bucket (""): the search is served from the plain
key alone, as without context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from core.analysis import text_key

SHORTHAND_FIELD = "genre"  # the field of a one-part "affinity.<value>" key (the shorthand spelling)
# Between the query key and the bucket in a contextual key. text_key never yields it (a control
# character is no word character), so a contextual key never equals a plain key.
SEPARATOR = "\x1f"


def _weight(raw: str) -> float | None:
    try:
        w = float(raw)
    except ValueError:
        return None
    return w if math.isfinite(w) and w > 0 else None


def _strongest(context: Mapping[str, str], name: str) -> str:
    prefix = name + "."
    weighted = [(-w, key) for key, raw in context.items()
                if key.startswith(prefix) and len(key) > len(prefix) and (w := _weight(raw)) is not None]
    if not weighted:
        return ""
    field, dot, value = min(weighted)[1][len(prefix):].partition(".")
    if not dot:
        field, value = SHORTHAND_FIELD, field
    value = text_key(value)
    return f"{name}.{text_key(field)}={value}" if value else ""


def context_bucket(context: Mapping[str, str], names: Sequence[str]) -> str:
    """The bucket of `context` for the names `names` (module docstring); "" when none applies."""
    parts = []
    for name in names:
        if name in context:
            value = text_key(context[name])
            part = f"{name}={value}" if value else ""
        else:
            part = _strongest(context, name)
        if part:
            parts.append(part)
    return "|".join(parts)


def contextual_key(query_key: str, bucket: str) -> str:
    """The key a pair is learned under for this kind of user; "" without a query key or a bucket."""
    return f"{query_key}{SEPARATOR}{bucket}" if query_key and bucket else ""
