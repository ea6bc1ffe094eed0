"""Categorical buckets derived from numeric audio features (Spotify's 0..1 scales and BPM).

Derived fields, each a set of values per entity (an entity may sit in several moods):

- mood, from valence (musical positiveness) and energy, after Russell's circumplex model of affect
  (valence on one axis, arousal on the other), with thresholds placed on the catalog's quartiles
  (valence 0.33/0.51/0.70, energy 0.58/0.72/0.84 on the Spotify songs data):
  happy      valence >= 0.60 and energy >= 0.50
  sad        valence <  0.35 and energy <  0.60
  chill      energy  <  0.55 and valence >= 0.35
  energetic  energy  >= 0.80
  intense    energy  >= 0.75 and valence < 0.35
- tempo, from BPM: slow < 90 <= medium < 120 <= fast < 150 <= very fast.
- danceability: low < 0.50 <= medium < 0.75 <= high.

Entities lacking a feature get no bucket for the fields that need it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from core.catalog import AttributeValue

DERIVED_FIELDS = ("mood", "tempo", "danceability")

MOODS = ("happy", "sad", "chill", "energetic", "intense")
TEMPO_BOUNDS = ((90.0, "slow"), (120.0, "medium"), (150.0, "fast"), (float("inf"), "very fast"))
DANCEABILITY_BOUNDS = ((0.50, "low"), (0.75, "medium"), (float("inf"), "high"))


def _number(attributes: Mapping[str, AttributeValue], name: str) -> float | None:
    value = attributes.get(name)
    return float(value) if isinstance(value, float | int) else None


def moods(valence: float, energy: float) -> list[str]:
    """The mood buckets of one (valence, energy) point, both in [0, 1]; see the module docstring."""
    out = []
    if valence >= 0.60 and energy >= 0.50:
        out.append("happy")
    if valence < 0.35 and energy < 0.60:
        out.append("sad")
    if energy < 0.55 and valence >= 0.35:
        out.append("chill")
    if energy >= 0.80:
        out.append("energetic")
    if energy >= 0.75 and valence < 0.35:
        out.append("intense")
    return out


def _bucket(value: float, bounds: tuple[tuple[float, str], ...]) -> str:
    for upper, name in bounds:
        if value < upper:
            return name
    return bounds[-1][1]


def derived_values(attributes: Mapping[str, AttributeValue]) -> Iterator[tuple[str, str]]:
    """(derived field, value) pairs of one entity's attributes, e.g. ("mood", "chill")."""
    valence, energy = _number(attributes, "valence"), _number(attributes, "energy")
    if valence is not None and energy is not None:
        for mood in moods(valence, energy):
            yield "mood", mood
    tempo = _number(attributes, "tempo")
    if tempo is not None and tempo > 0:
        yield "tempo", _bucket(tempo, TEMPO_BOUNDS)
    dance = _number(attributes, "danceability")
    if dance is not None:
        yield "danceability", _bucket(dance, DANCEABILITY_BOUNDS)
