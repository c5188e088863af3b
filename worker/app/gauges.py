"""The operational figures that the API's `/metrics` reads from the database at each scrape
(the alerts in deploy/prometheus/ are written on them)."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.store import gauges as store
from worker.store import regulations
from worker.store.db import Database

# The webhook backlog is counted up to this many deliveries: enough to see a backlog grow
# well past its alert, never a scan of the whole table.
WEBHOOK_BACKLOG_CAP = 10_000


def read_figures(db: Database, worker_dead_after_s: float) -> dict[str, float]:
    """`oldest_pending_age_s` (0 when nothing is pending), `webhook_backlog` (due,
    undelivered, at most WEBHOOK_BACKLOG_CAP), `live_workers` and `regulations_oldest_age_s`
    (the least recently fetched Twilio Regulations entry; 0 when none is cached), in one read
    transaction."""
    now = datetime.now(UTC)
    with db.read() as session:
        since = store.oldest_pending_since(session)
        backlog = store.webhook_backlog(session, now, WEBHOOK_BACKLOG_CAP)
        live = store.live_workers(session, now, worker_dead_after_s)
        fetched = regulations.oldest_fetched_at(session)  # a small table: a few rows a country
    return {
        "oldest_pending_age_s": max(0.0, (now - since).total_seconds()) if since else 0.0,
        "webhook_backlog": float(backlog),
        "live_workers": float(live),
        "regulations_oldest_age_s": max(0.0, (now - fetched).total_seconds()) if fetched else 0.0,
    }
