"""The broker's Prometheus metrics (prometheus-client), served over HTTP with `ltrr broker
--metrics-port`. Counters only go up; a scrape shows how the broker is doing without reading logs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

SEARCHES = Counter("ltrr_broker_searches", "Searches answered with a stored, joinable decision")
FEEDBACK = Counter("ltrr_broker_feedback_events", "New feedback events stored and learned (duplicates excluded)")
DECISION_WRITE_RETRIES = Counter("ltrr_broker_decision_write_retries",
                                 "Group commits of decisions that failed and were retried")
DECISION_WRITE_FAILURES = Counter("ltrr_broker_decision_write_failures",
                                  "Decisions that could not be stored after every retry (their searches failed "
                                  "with UNAVAILABLE)")
SNAPSHOT_FAILURES = Counter("ltrr_broker_snapshot_failures", "Policy snapshots that could not be written")
OUTBOX_LAG = Gauge("ltrr_broker_outbox_lag_events", "Logged feedback events not yet acknowledged by the memory shard")
OUTBOX_FAILURES = Counter("ltrr_broker_outbox_failures", "Learn calls to the memory shard that failed (retried)")
RECENT_BYTES = Gauge("ltrr_broker_recent_decision_bytes", "Estimated bytes of the recent-decision cache")
LOG_COMPACTED = Counter("ltrr_broker_eventlog_compacted_rows", "Decision rows compacted or deleted by retention")


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on host:port from a daemon thread."""
    start_http_server(port, addr=host)
