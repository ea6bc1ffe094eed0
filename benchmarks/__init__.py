"""Benchmarks: relevance and speed against peers, run as scripts (python -m benchmarks.NAME), never by pytest."""
