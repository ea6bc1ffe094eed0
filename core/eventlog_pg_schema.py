"""The event log's tables on PostgreSQL (core.eventlog_pg is the API) and how a session is opened.

The same columns as the SQLite schema version 5 (core.eventlog_schema), with PostgreSQL types, plus:
- event_counter: one row (id 1), the newest event position given; the inserting transaction locks
  it, so positions increase in commit order (core.eventlog_pg explains why).
- snapshots: position BIGINT PK (the event position the policy has applied up to), applied_events,
  ts (s since the epoch), data (the policy's .npz bytes with its query history).
- catalog_writes, catalog_versions: the catalog log (core.catalog_store), and catalog_counter: one
  row, the newest catalog position, locked by an appending transaction like event_counter. A
  database made before the catalog log gets these tables when a broker next opens it, and one made
  before catalog_writes.batch_end that column (NULL in the rows written before; added only when
  missing, since ALTER TABLE locks the whole table even when IF NOT EXISTS finds the column).
Created with IF NOT EXISTS under an advisory transaction lock, so brokers starting at once agree.
"""

from __future__ import annotations

from typing import Any

import psycopg

# Seconds to wait for the server before a call fails with UnavailableError (the server down or
# restarting): a search or feedback then fails fast instead of hanging.
CONNECT_TIMEOUT_S = 3
# A statement running longer than this is cancelled (a lock held by a stuck transaction).
STATEMENT_TIMEOUT_MS = 10_000
SCHEMA_LOCK = 0x6C747272  # "ltrr": the advisory lock under which the tables are created

CREATE = """
CREATE TABLE IF NOT EXISTS decisions (
  decision_id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, query_text TEXT NOT NULL, context TEXT NOT NULL,
  features BYTEA NOT NULL, strategies TEXT NOT NULL, quotas TEXT NOT NULL, allocation INTEGER NOT NULL,
  propensity DOUBLE PRECISION NOT NULL, marginals TEXT NOT NULL, policy TEXT NOT NULL, lists BYTEA NOT NULL,
  final TEXT NOT NULL, latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0, policy_version BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS decisions_by_ts ON decisions(ts);
CREATE TABLE IF NOT EXISTS events (
  position BIGINT PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
  decision_id TEXT NOT NULL REFERENCES decisions(decision_id), entity_id TEXT NOT NULL, type INTEGER NOT NULL,
  value DOUBLE PRECISION NOT NULL, ts DOUBLE PRECISION NOT NULL, reward DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_decision ON events(decision_id);
CREATE TABLE IF NOT EXISTS event_counter (id INTEGER PRIMARY KEY CHECK (id = 1), position BIGINT NOT NULL);
INSERT INTO event_counter (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, position BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
  position BIGINT PRIMARY KEY, applied_events BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_writes (
  position BIGINT PRIMARY KEY, entity_id TEXT NOT NULL, version BIGINT NOT NULL, payload TEXT,
  written_at DOUBLE PRECISION NOT NULL, batch_end BIGINT);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                 AND table_name = 'catalog_writes' AND column_name = 'batch_end') THEN
    ALTER TABLE catalog_writes ADD COLUMN batch_end BIGINT;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS catalog_versions (entity_id TEXT PRIMARY KEY, version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_counter (id INTEGER PRIMARY KEY CHECK (id = 1), position BIGINT NOT NULL);
INSERT INTO catalog_counter (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
"""


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit session at `url` with synchronous_commit on (a commit returns once the WAL is
    flushed) whatever the server's default. psycopg.OperationalError if the server is unreachable."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    conn.execute("SET synchronous_commit = on")
    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    return conn
