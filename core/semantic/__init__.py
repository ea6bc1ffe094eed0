"""The semantic strategy."""
