"""The registry of retrieval strategies: every strategy module's StrategyEntry, by kind.

Each strategy module defines `ENTRY` (how to build and load its index component); this module
collects them, so the value types (core.types) never import a strategy and no cycle forms.
"""

from __future__ import annotations

from core.attribute.index import ENTRY as ATTRIBUTE
from core.lexical.index import ENTRY as LEXICAL
from core.memory.index import ENTRY as MEMORY
from core.semantic.index import ENTRY as SEMANTIC
from core.types import StrategyEntry, StrategyKind

REGISTRY: dict[StrategyKind, StrategyEntry] = {
    StrategyKind.LEXICAL: LEXICAL, StrategyKind.SEMANTIC: SEMANTIC,
    StrategyKind.ATTRIBUTE: ATTRIBUTE, StrategyKind.MEMORY: MEMORY,
}


def entry_for(name: str) -> tuple[StrategyKind, StrategyEntry]:
    """The registered strategy called `name`; ValueError listing the known ones otherwise."""
    try:
        kind = StrategyKind(name)
        return kind, REGISTRY[kind]
    except (ValueError, KeyError):
        known = ", ".join(sorted(k.value for k in REGISTRY))
        raise ValueError(f"unknown strategy {name!r}; available: {known}") from None
