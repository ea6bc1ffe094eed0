"""The simulator's small music index (tests/core/simulator/conftest.py), for the benchmark tests that run it."""

from tests.core.simulator.conftest import music_index, music_slice  # noqa: F401
