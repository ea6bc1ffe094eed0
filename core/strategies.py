"""Imports every strategy module so that each registers itself in core.strategy.REGISTRY."""

from core.attribute import index as _attribute  # noqa: F401
from core.lexical import index as _lexical  # noqa: F401
from core.memory import index as _memory  # noqa: F401
from core.semantic import index as _semantic  # noqa: F401
