"""Simulated users and what they search for: four intents over a MusicWorld.

Generative model (every draw comes from one numpy Generator seeded by `SimulatorConfig.seed`, so
a seed fixes the whole stream of searches):

1. Users. `n_users` users, each with a genre affinity a_u ~ Dirichlet(affinity_concentration) over
   the catalog's genres, a peak hour h_u ~ U{0..23}, a device (mobile 0.6, desktop 0.25, speaker
   0.1, tv 0.05). A search picks a user uniformly, its hour is (h_u + round(N(0, hour_spread))) mod
   24, its weekday uniform in 0..6. The context sent with the query carries hour, weekday, device
   and the user's strongest affinity as `affinity.genre.<genre>` (the spelling of
   protos/ltrr/v1/common.proto).
2. Intent, drawn from `intent_mix` (spearfishing, topical, attribute, context):
   - spearfishing: a target track drawn with weight exp(popularity / popularity_scale), typed as
     its short title, a partial title, "artist + a title word" ("tayler love"), the artist alone,
     or "title artist"; then a typo with probability typo_rate and a dropped word with probability
     drop_rate (core.simulator.noise). Relevant: the target (grade 2) and, for the artist-alone
     form, the artist's other tracks (grade 1).
   - topical: a real playlist name (playlists with >= min_relevant tracks, weight sqrt(size));
     relevant: that playlist's tracks.
   - attribute: a genre, subgenre, mood, "decade genre" or "mood genre" phrase; relevant: the
     tracks having all of them (at least min_relevant; otherwise drawn again).
   - context: a vague time-of-day query ("late night music"); relevant: the tracks of the user's
     favourite genre in the moods of that part of the day (DAYPARTS).
3. Target. For every intent but spearfishing, the track the user wants is drawn from the relevant
   set with weight exp(popularity / popularity_scale) * ((1 - s) + s * G * a_u[genre]) *
   (1 + hour_boost if the track's mood suits the hour), s = affinity_strength, G = number of
   genres: context (time of day and affinity) shifts which relevant track a user acts on. The
   target has grade 2, the rest of the relevant set grade 1.

Demand is head-heavy: Spotify's popularity (0..100) is a compressed scale of recent plays, so the
weight is exponential in it; with popularity_scale 10 a track 20 points more popular is e^2 (7.4
times) as likely to be wanted. (A weight linear in popularity made broad intents' targets almost
uniform over relevant sets of thousands, so that no plan, the oracle included, could retrieve
them, and the memory strategy had nothing to learn from repeats.)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from core.attribute.index import short_title
from core.simulator import noise
from core.simulator.world import MusicWorld


class Intent(enum.IntEnum):
    SPEARFISHING = 0
    TOPICAL = 1
    ATTRIBUTE = 2
    CONTEXT = 3


DEVICES = (("mobile", 0.6), ("desktop", 0.25), ("speaker", 0.1), ("tv", 0.05))
# Part of the day -> (first hour, moods that suit it, query phrases).
DAYPARTS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "night": (22, ("chill", "sad"), ("late night music", "night chill", "songs for the night")),
    "morning": (6, ("happy", "energetic"), ("morning music", "wake up songs", "morning playlist")),
    "afternoon": (12, ("happy", "chill"), ("afternoon music", "afternoon vibes", "daytime songs")),
    "evening": (18, ("energetic", "intense"), ("evening music", "friday night songs", "evening playlist")),
}
SPEAR_FORMS = ("title", "partial", "artist_word", "artist", "title_artist")
SPEAR_FORM_WEIGHTS = (0.35, 0.15, 0.2, 0.15, 0.15)


def daypart(hour: int) -> str:
    """The part of the day an hour in 0..23 belongs to (night 22-5, morning 6-11, afternoon 12-17,
    evening 18-21)."""
    if not 0 <= hour <= 23:
        raise ValueError(f"`hour` must be in [0, 23], but got {hour}")
    return "night" if hour >= 22 or hour < 6 else "morning" if hour < 12 else "afternoon" if hour < 18 else "evening"


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """See the module docstring for what each parameter does in the generative model."""

    seed: int = 0
    n_users: int = 1000
    intent_mix: tuple[float, float, float, float] = (0.4, 0.2, 0.25, 0.15)
    typo_rate: float = 0.3
    drop_rate: float = 0.1
    popularity_scale: float = 10.0
    affinity_concentration: float = 0.3
    affinity_strength: float = 0.8
    hour_spread: float = 3.0
    hour_boost: float = 1.0
    min_relevant: int = 5

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.min_relevant < 1:
            raise ValueError(f"`n_users` and `min_relevant` must be >= 1, but got {self.n_users} and "
                             f"{self.min_relevant}")
        if len(self.intent_mix) != len(Intent) or min(self.intent_mix) < 0 or not math.isclose(sum(self.intent_mix), 1):
            raise ValueError(f"`intent_mix` must be {len(Intent)} non-negative weights summing to 1, "
                             f"but got {self.intent_mix}")
        for name in ("typo_rate", "drop_rate", "affinity_strength"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], but got {getattr(self, name)}")
        for name in ("popularity_scale", "affinity_concentration"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"`{name}` must be finite and > 0, but got {getattr(self, name)}")
        for name in ("hour_spread", "hour_boost"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"`{name}` must be finite and >= 0, but got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class SimSearch:
    """One simulated search. intent: an Intent here; other simulators' group label (the routing
    benchmark: the collection's index), stored in Records.intent; relevant: int64 ordinals,
    ascending (the target among them); target: the ordinal of the track the user wants; context:
    as sent to the broker."""

    intent: int
    user: int
    text: str
    context: dict[str, str]
    relevant: np.ndarray
    target: int


def _pick(rng: np.random.Generator, weights: np.ndarray) -> int:
    """An index drawn with probability proportional to `weights` (float64, non-negative, sum > 0)."""
    cdf = np.cumsum(weights)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(weights) - 1))


class UserSimulator:
    """Draws a deterministic stream of SimSearch from a MusicWorld (see the module docstring)."""

    def __init__(self, world: MusicWorld, config: SimulatorConfig | None = None) -> None:
        self.world = world
        self.config = config or SimulatorConfig()
        c = self.config
        self.rng = np.random.default_rng(c.seed)
        n_genres = max(len(world.genres), 1)
        self.affinity = self.rng.dirichlet(np.full(n_genres, c.affinity_concentration), size=c.n_users)
        self.peak_hour = self.rng.integers(0, 24, size=c.n_users)
        self.device = self.rng.choice(len(DEVICES), size=c.n_users, p=[p for _, p in DEVICES])
        self.full_weight = np.exp((world.popularity - world.popularity.max()) / c.popularity_scale)
        self.pop_weight = self.full_weight  # 0 where a track is not available (set_available)
        self.mood_mask = {m: np.isin(np.arange(len(world)), world.facet("mood", m))
                          for _, (_, ms, _) in DAYPARTS.items() for m in ms}
        self.playlists = world.facet_values("playlist", c.min_relevant)
        self.playlist_weight = np.sqrt([len(world.facet("playlist", p)) for p in self.playlists])
        self.attribute_facets = {f: world.facet_values(f, c.min_relevant) for f in ("genre", "subgenre", "mood")}
        self.decades = world.facet_values("decade", c.min_relevant)
        self.pop_cdf = np.cumsum(self.pop_weight)
        self.memo: dict[tuple[str, ...], np.ndarray] = {}  # relevant sets of facet combinations

    def _both(self, a: tuple[str, str], b: tuple[str, str]) -> np.ndarray:
        key = (*a, *b)
        if key not in self.memo:
            self.memo[key] = np.intersect1d(self.world.facet(*a), self.world.facet(*b), assume_unique=True)
        return self.memo[key]

    def __iter__(self) -> UserSimulator:
        return self

    def __next__(self) -> SimSearch:
        return self.next_search()

    def set_available(self, available: np.ndarray) -> None:
        """Only the tracks where bool (n,) `available` is True can be wanted from now on (the others
        are not released yet, core.simulator.releases): their target weight becomes 0. They stay
        in the facets' relevant sets (grade 1), as a shop lists a pre-order."""
        if available.shape != (len(self.world),) or not available.any():
            raise ValueError(f"`available` must be a bool array of shape ({len(self.world)},) with a True, "
                             f"but got shape {available.shape} with {int(available.sum())} True")
        self.pop_weight = self.full_weight * available
        self.pop_cdf = np.cumsum(self.pop_weight)

    def _user_context(self) -> tuple[int, int, dict[str, str]]:
        """(user, hour, the context sent with the query) of the next search."""
        rng = self.rng
        user = int(rng.integers(self.config.n_users))
        hour = int(self.peak_hour[user] + round(rng.normal(0.0, self.config.hour_spread))) % 24
        context = {"hour": str(hour), "weekday": str(int(rng.integers(7))),
                   "device": DEVICES[int(self.device[user])][0]}
        if self.world.genres:
            g = int(self.affinity[user].argmax())
            context[f"affinity.genre.{self.world.genres[g]}"] = f"{self.affinity[user, g]:.3f}"
        return user, hour, context

    def next_search(self) -> SimSearch:
        rng = self.rng
        user, hour, context = self._user_context()
        intent = Intent(_pick(rng, np.asarray(self.config.intent_mix)))
        if intent is Intent.SPEARFISHING:
            return self._spearfishing(user, context)
        text, relevant = {Intent.TOPICAL: self._topical, Intent.ATTRIBUTE: self._attribute,
                          Intent.CONTEXT: self._context}[intent](user, hour)
        weights = self._target_weights(user, hour, relevant)
        if relevant.size == 0 or not weights.sum() > 0:  # no such facets, or none of it available
            return self._spearfishing(user, context)
        target = int(relevant[_pick(rng, weights)])
        return SimSearch(intent=intent, user=user, text=text, context=context, relevant=relevant, target=target)

    def known_item_search(self, target: int) -> SimSearch:
        """A spearfishing search of a user drawn as usual for the track at ordinal `target` (a new
        release everyone looks for, core.simulator.releases)."""
        if not 0 <= target < len(self.world):
            raise ValueError(f"`target` must be in [0, {len(self.world)}), but got {target}")
        user, _, context = self._user_context()
        return self._spearfishing(user, context, target)

    def affinity_multiplier(self, user: int, ordinals: np.ndarray) -> np.ndarray:
        """float64 (len(ordinals),): (1 - s) + s * G * a_u[genre] per ordinal (1 without a genre)."""
        s, world = self.config.affinity_strength, self.world
        genre = world.genre_of[ordinals]
        aff = np.where(genre >= 0, self.affinity[user][np.maximum(genre, 0)] * len(world.genres), 1.0)
        return (1 - s) + s * aff

    def track_facts(self, ordinals: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(genre int32 per ordinal, -1 = none; artist per ordinal) of int64 `ordinals`: what the
        listener compares with the target (core.simulator.runner.Audience)."""
        return self.world.genre_of[ordinals], [self.world.artists[o] for o in ordinals.tolist()]

    def _target_weights(self, user: int, hour: int, relevant: np.ndarray) -> np.ndarray:
        suits = np.zeros(relevant.size, dtype=bool)
        for m in DAYPARTS[daypart(hour)][1]:
            suits |= self.mood_mask[m][relevant]
        return self.pop_weight[relevant] * self.affinity_multiplier(user, relevant) * \
            (1.0 + self.config.hour_boost * suits)

    def _spearfishing(self, user: int, context: dict[str, str], target: int | None = None) -> SimSearch:
        """A known-item search for `target` (None: drawn by popularity)."""
        rng, world = self.rng, self.world
        # Noise draws a varying number of values: give it its own generator, so the main stream
        # (and so every later search) does not depend on whether a typo happened.
        noisy = np.random.default_rng(int(rng.integers(2**63)))
        if target is None:
            target = int(min(np.searchsorted(self.pop_cdf, rng.random() * self.pop_cdf[-1], side="right"),
                             len(world) - 1))
        title, artist = short_title(world.titles[target]).lower(), world.artists[target].lower()
        form = SPEAR_FORMS[_pick(rng, np.asarray(SPEAR_FORM_WEIGHTS))]
        relevant = np.array([target], dtype=np.int64)
        if form == "partial":
            text = noise.prefix(title, noisy)
        elif form == "artist_word" and artist:
            words = [w for w in title.split() if len(w) >= 3] or title.split() or [""]
            text = f"{artist} {words[int(noisy.integers(len(words)))]}"
        elif form == "artist" and artist:
            text, relevant = artist, world.facet("artist", world.artists[target])
        elif form == "title_artist":
            text = f"{title} {artist}"
        else:
            text = title
        if rng.random() < self.config.typo_rate:
            text = noise.typo(text, noisy)
        if rng.random() < self.config.drop_rate and form != "artist":
            text = noise.drop_word(text, noisy)
        text = " ".join(text.split()) or title or world.ids[target]
        return SimSearch(intent=Intent.SPEARFISHING, user=user, text=text, context=context,
                         relevant=relevant, target=target)

    def _topical(self, user: int, hour: int) -> tuple[str, np.ndarray]:
        if not self.playlists:
            return "", np.zeros(0, dtype=np.int64)
        name = self.playlists[_pick(self.rng, self.playlist_weight)]
        return name.lower(), self.world.facet("playlist", name)

    def _attribute(self, user: int, hour: int) -> tuple[str, np.ndarray]:
        rng, world, facets = self.rng, self.world, self.attribute_facets
        for _ in range(10):
            kind = int(rng.integers(5))
            field = ("genre", "subgenre", "mood", "genre", "genre")[kind]
            if not facets[field]:
                continue
            value = facets[field][int(rng.integers(len(facets[field])))]
            text, relevant = f"{value} music" if kind == 0 else value, world.facet(field, value)
            if kind == 3 and self.decades:
                decade = self.decades[int(rng.integers(len(self.decades)))]
                text, relevant = f"{decade} {value}", self._both((field, value), ("decade", decade))
            elif kind == 4 and facets["mood"]:
                mood = facets["mood"][int(rng.integers(len(facets["mood"])))]
                text, relevant = f"{mood} {value}", self._both((field, value), ("mood", mood))
            if relevant.size >= self.config.min_relevant:
                return text, relevant
        return "", np.zeros(0, dtype=np.int64)

    def _context(self, user: int, hour: int) -> tuple[str, np.ndarray]:
        if not self.world.genres:
            return "", np.zeros(0, dtype=np.int64)
        _, part_moods, phrases = DAYPARTS[daypart(hour)]
        genre = self.world.genres[int(self.affinity[user].argmax())]
        relevant = np.unique(np.concatenate([self._both(("genre", genre), ("mood", m)) for m in part_moods]))
        return phrases[int(self.rng.integers(len(phrases)))], relevant
