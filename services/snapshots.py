"""The broker's policy snapshots: where they are kept and how they are read back.

A snapshot is the policy's .npz (core.policy.policies.BanditPolicy.to_bytes) with, in its extra
data, the event position it has applied up to (APPLIED), how many events that is (APPLIED_EVENTS:
its policy version; absent in snapshots written before, read as 0), the query history (HISTORY) and
the warm-start record (WARM_START). A store that keeps snapshots (core.eventstore.SnapshotStore:
PostgreSQL, whose brokers are stateless) holds them in its `snapshots` table, shared by every
broker; otherwise they are the file POLICY_FILE in the broker's state directory.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import StateError
from core.eventstore import SnapshotStore
from core.policy.history import QueryHistory
from core.policy.policies import BanditPolicy

log = logging.getLogger("ltrr.broker")

POLICY_FILE = "policy.npz"
APPLIED = "applied_event_rowid"  # the event-log position a policy snapshot has learned up to
APPLIED_EVENTS = "applied_events"  # how many events it has applied (its policy version)
HISTORY = "query_history"  # the query history (core.policy.history) as of that position
WARM_START = "warm_start"  # where the policy was warm-started from (BrokerConfig.warm_start), once
# what BanditPolicy.load raises on a damaged snapshot; caught before ValueError (JSONDecodeError and
# UnicodeDecodeError are ValueErrors), which means a readable snapshot of another policy
DAMAGED = (zipfile.BadZipFile, KeyError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError)


def load_snapshot(path: Path, policy: BanditPolicy) -> dict[str, Any]:
    """Restore `policy` from its snapshot and return the snapshot's extra data; {} without one.
    A snapshot of another policy (other strategies or features: an upgrade or a changed config) is
    moved aside to policy.npz.incompatible with a warning, and the policy is rebuilt from the log.
    A damaged one stops the start (StateError): moving it aside silently would hide a disk fault."""
    if not path.exists():
        return {}
    try:
        return policy.load(path)
    except DAMAGED as e:
        raise StateError(path, f"the policy snapshot is damaged ({type(e).__name__}: {e}); {_MOVE_ASIDE}") from None
    except ValueError as e:  # readable, but saved for other strategies, features or model
        aside = path.with_name(POLICY_FILE + ".incompatible")
        path.replace(aside)
        log.warning("policy: %s; moved it to %s and rebuilding from the event log", e, aside)
        return {}


_MOVE_ASIDE = ("move it aside (e.g. `mv policy.npz policy.npz.damaged`) and restart: the broker rebuilds the "
               "policy by replaying the event log")


def load_stored_snapshot(store: SnapshotStore, policy: BanditPolicy) -> dict[str, Any]:
    """load_snapshot for a store that keeps snapshots (PostgreSQL): the newest one, or {}. One of
    another policy is passed over with a warning (the policy is rebuilt from the log); a damaged
    one stops the start (StateError)."""
    latest = store.latest_snapshot()
    if latest is None:
        return {}
    where = f"the event store's snapshot at position {latest[0]}"
    try:
        return policy.load(io.BytesIO(latest[2]))  # type: ignore[arg-type]  # np.load reads a file object
    except DAMAGED as e:
        raise StateError(where, f"the policy snapshot is damaged ({type(e).__name__}: {e}); delete that row "
                                "(DELETE FROM snapshots WHERE position = ...) and restart") from None
    except ValueError as e:
        log.warning("policy: %s is of another policy (%s); rebuilding from the event log", where, e)
        return {}


def load_history(saved: Mapping[str, Any], path: Path) -> QueryHistory:
    """The query history of a snapshot's extra data (a JSON blob, or an object in older ones)."""
    if HISTORY not in saved:
        return QueryHistory()
    raw = saved[HISTORY]
    try:
        return QueryHistory.from_json(json.loads(raw) if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateError(path, f"the policy snapshot's query history is damaged ({e}); {_MOVE_ASIDE}") from None
