"""The memory strategy."""
