"""Hand-written query phrases: synonyms of catalog values, derived phrases and filler words.

Each phrase maps to one or more (field, canonical value) targets with a confidence in [0, 1]; a
phrase whose target value is absent from the index is ignored at load. Phrases are written in
the query-key form (normalised, tokenised, single spaces: see core.analysis.text_key).
"""

from __future__ import annotations

Target = tuple[str, str]

# phrase -> (targets, confidence)
SYNONYMS: dict[str, tuple[tuple[Target, ...], float]] = {}


def _add(phrases: str, targets: tuple[Target, ...], confidence: float = 0.9) -> None:
    for phrase in phrases.split(","):
        SYNONYMS[phrase.strip()] = (targets, confidence)


# Moods (core.attribute.buckets).
_add("chill,chilled,chillout,chill out,relax,relaxing,relaxed,calm,mellow,laid back,study,sleep,soft",
     (("mood", "chill"),))
_add("happy,upbeat,cheerful,feel good,good vibes,joyful,uplifting,sunny", (("mood", "happy"),))
_add("sad,melancholy,melancholic,depressing,heartbreak,heartbroken,crying,gloomy", (("mood", "sad"),))
_add("energetic,energy,hype,pump up,power,high energy", (("mood", "energetic"),))
_add("workout,gym,running,training,cardio", (("mood", "energetic"), ("tempo", "fast")), 0.85)
_add("intense,angry,aggressive,dark,rage,hard", (("mood", "intense"),), 0.8)
# Tempo and danceability.
_add("slow,slow tempo,downtempo,ballad,ballads", (("tempo", "slow"),), 0.8)
_add("mid tempo,midtempo,medium tempo", (("tempo", "medium"),))
_add("fast,uptempo,up tempo,fast tempo", (("tempo", "fast"),), 0.85)
_add("very fast", (("tempo", "very fast"),))
_add("danceable,dancing,party,groovy,dance floor,dancefloor", (("danceability", "high"),), 0.85)
# Genres.
_add("hip hop,hiphop,hip-hop,rap music", (("genre", "rap"),), 0.85)
_add("rnb,r and b,rhythm and blues", (("genre", "r&b"),))
_add("electronic,electronic dance music,dance music,electro", (("genre", "edm"),), 0.85)
_add("latino,latin music,musica latina", (("genre", "latin"),))
_add("rock and roll,rock n roll", (("genre", "rock"),), 0.85)
_add("reggaeton music,regueton", (("subgenre", "reggaeton"),))

_DECADE_WORDS = {"1950s": "fifties", "1960s": "sixties", "1970s": "seventies", "1980s": "eighties",
                 "1990s": "nineties", "2000s": "noughties", "2010s": "twenty tens", "2020s": "twenties"}


def decade_phrases(decade: str) -> list[tuple[str, float]]:
    """Phrases meaning `decade` ("1990s"): "90s", "90", "nineties", "1990"... with confidences."""
    if len(decade) != 5 or not decade[:4].isdigit() or decade[4] != "s":
        return []
    short = decade[2:4]
    out = [(f"{short}s", 1.0), (f"{short} s", 0.95), (short, 0.8), (decade[:4] + " s", 0.95)]
    if decade in _DECADE_WORDS:
        out.append((_DECADE_WORDS[decade], 1.0))
    return out


# Leftover words that carry no constraint ("taylor swift songs"): dropped from the free text.
FILLERS = frozenset(
    "song songs music track tracks tune tunes by from the of a an some playlist playlists hits best top "
    "for with and in to me my".split())
