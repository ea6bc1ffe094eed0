"""The attribute strategy."""
