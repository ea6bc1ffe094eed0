"""One recording, one result: what counts as the same recording, and collapsing served lists to it.

A catalog lists one recording many times: the single, the album, a compilation, a remaster
("Dance Monkey — Tones and I" is on three releases of the demo catalog). A listener wants each
recording once. Two entities are the same recording when their `recording_key`s are equal:

    text_key(strip_credits(strip_remaster(title))) + " / " + text_key(artist)

- a remaster tag (" - 2011 Remaster", " - Remastered 2009", "(Remastered)", " - Remasterizado")
  is dropped: remastering changes the mastering, not the recording a listener asks for;
- a credit ("(feat. Beyoncé)", "[with Justin Bieber]", "(ft. X)") is dropped: the same recording
  is often listed with and without its guests' names, while a guest version that is a different
  recording (a remix with a new verse) almost always says so in its title (" - Remix") or its
  artist, which stay in the key;
- every other version tag stays (" - Live", " - Radio Edit", " - Acoustic", " - Taylor's
  Version", " - Remix"): those are different recordings, which a listener may want by name.

`strip_credits` is also what the ranking features read as a title (core.ranking.EntityTable): a
guest's name in a credit says who sings on the track, not what it is called.

`distinct_top` is the collapse itself; core.pipeline.SearchPipeline.serve applies it to the
ranked candidates, so the broker and the simulator show the same lists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from core.analysis import text_key

_CREDIT = re.compile(r"\s*[(\[](?:feat\.?|ft\.?|featuring|with)\s[^)\]]*[)\]]", re.IGNORECASE)
_REMASTER = re.compile(
    r"\s*(?:-\s+|[(\[])(?:\d{4}\s+)?(?:digital(?:ly)?\s+)?remaster(?:ed|izado|izada)?(?:\s+\d{4})?"
    r"(?:\s+version)?\s*[)\]]?\s*$", re.IGNORECASE)
_KEY_SEPARATOR = " / "


def strip_credits(text: str) -> str:
    """`text` without its credit parentheticals: "Mi Gente (feat. Beyoncé)" -> "Mi Gente";
    "I Don't Care (with Justin Bieber) - Loud Luxury Remix" -> "I Don't Care - Loud Luxury Remix"."""
    return _CREDIT.sub("", text).strip() or text.strip()


def strip_remaster(title: str) -> str:
    """`title` without a trailing remaster tag: "Help! - Remastered 2009" -> "Help!"."""
    return _REMASTER.sub("", title).strip() or title.strip()


def recording_key(title: str, artist: str) -> str:
    """The key two copies of one recording share (module docstring); "" when the title has no
    words, which `distinct_top` never collapses."""
    title_key = text_key(strip_credits(strip_remaster(title)))
    return f"{title_key}{_KEY_SEPARATOR}{text_key(artist)}" if title_key else ""


def distinct_top(order: np.ndarray, keys: Sequence[str], k: int) -> np.ndarray:
    """int64 (m,), m <= k: the positions in `order` of the first k entries whose recording is new,
    best first, so that a lower-ranked copy of a shown recording gives its slot to the next
    distinct one. order: int64, indexes into `keys` (one recording key per candidate, "" =
    unknown, never collapsed), best first."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"`k` must be an integer >= 0, but got {k!r}")
    seen: set[str] = set()
    keep: list[int] = []
    for pos, row in enumerate(order.tolist()):
        if len(keep) >= k:
            break
        key = keys[row]
        if key and key in seen:
            continue
        seen.add(key)
        keep.append(pos)
    return np.array(keep, dtype=np.int64)


def recording_copies(keys: Sequence[str]) -> dict[int, frozenset[int]]:
    """Per position of `keys` (recording_key per entity, "" = unknown) that has copies, the
    positions of every copy of its recording, itself included; positions without copies are
    absent. What the simulator reads as "the track the user wants": any copy of the recording."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key:
            groups.setdefault(key, []).append(i)
    return {i: frozenset(g) for g in groups.values() if len(g) > 1 for i in g}
