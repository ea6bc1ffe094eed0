"""Imports every strategy module so that each registers itself in core.strategy.REGISTRY."""

from core.lexical import index as _lexical  # noqa: F401
from core.semantic import index as _semantic  # noqa: F401
