"""Helpers shared by the `ltrr` command modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEMO_QUERIES = ("bohemian rhapsody", "taylor swift love", "dance monkey", "beyonce", "summer hits 2019")


def parse_options(pairs: Sequence[str], *, scoped: bool) -> dict[str, Any]:
    """["k1=1.2"] -> {"k1": "1.2"}; scoped: ["lexical.k1=1.2"] -> {"lexical": {"k1": "1.2"}}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option expects {'STRATEGY.' if scoped else ''}KEY=VALUE, got {pair!r}")
        if scoped:
            scope, dot, name = key.partition(".")
            if not dot:
                raise SystemExit(f"error: --option expects STRATEGY.KEY=VALUE, got {pair!r}")
            out.setdefault(scope, {})[name] = value
        else:
            out[key] = value
    return out
