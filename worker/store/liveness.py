"""Worker heartbeats, and the takeover of leases held by runners whose worker stopped beating."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from worker.store.models import Contact, WorkerHeartbeat
from worker.store.pipeline import RUNNABLE


def worker_of(owner: str) -> str:
    """The worker process (`host:pid`) of a lease owner (`host:pid:task_id`)."""
    return owner.rsplit(":", 1)[0]


def beat(session: Session, worker_id: str, now: datetime) -> None:
    """Record that `worker_id` is alive now."""
    done = session.execute(
        update(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id).values(beat_at=now)
    )
    if done.rowcount == 0:  # type: ignore[attr-defined]
        session.execute(insert(WorkerHeartbeat).values(id=worker_id, started_at=now, beat_at=now))


def forget(session: Session, worker_id: str) -> None:
    """A worker that stops cleanly says so (it holds no lease any more)."""
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id))


def take_over_dead(
    session: Session, now: datetime, dead_after_s: float, lease_s: float
) -> list[tuple[str, str | None]]:
    """Expire, now, the live leases of runners whose worker has not beaten for `dead_after_s`,
    and return those contacts (id, batch id) for the caller to publish.

    A lease counts only once it has gone `dead_after_s` without renewal (a runner renews it
    at every step), so a runner that has just taken one is never judged by a heartbeat that
    may not have been written yet. The next runner takes the expired lease as a takeover; the
    lease stays the arbiter: were the old runner alive after all, its next write under the
    lease is refused.
    """
    cutoff = now - timedelta(seconds=dead_after_s)
    owners = set(
        session.execute(
            select(Contact.lease_owner)
            .where(
                Contact.status.in_(RUNNABLE),
                Contact.lease_expires_at > now,
                Contact.lease_expires_at < cutoff + timedelta(seconds=lease_s),
                Contact.lease_owner.is_not(None),
            )
            .distinct()
        ).scalars()
    )
    if not owners:
        return []
    workers = {worker_of(owner) for owner in owners if owner}
    alive = set(
        session.execute(
            select(WorkerHeartbeat.id).where(
                WorkerHeartbeat.id.in_(workers), WorkerHeartbeat.beat_at >= cutoff
            )
        ).scalars()
    )
    dead = [owner for owner in owners if owner and worker_of(owner) not in alive]
    if not dead:
        return []
    # A row another transaction holds locked (a runner frozen inside its transaction) is
    # skipped, not waited for: every other dead runner's contacts are taken over now, and
    # that one at a later pass, once the server has ended the frozen session
    # (`idle_in_transaction_session_timeout`). PostgreSQL only; SQLite has no row locks.
    unlocked = (
        select(Contact.id)
        .where(
            Contact.lease_owner.in_(dead),
            Contact.status.in_(RUNNABLE),
            Contact.lease_expires_at > now,
        )
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(Contact)
        .where(Contact.id.in_(unlocked), Contact.lease_owner.in_(dead))
        .values(lease_expires_at=now - timedelta(microseconds=1))
        .returning(Contact.id, Contact.batch_id)
    ).all()
    return [(row.id, row.batch_id) for row in rows]


def orphaned(
    session: Session, now: datetime, dead_after_s: float, grace_s: float, limit: int
) -> list[tuple[str, str | None, float]]:
    """The contacts whose messages may have died with a worker; (id, batch id, seconds until
    due) for the caller to publish again. Empty unless a worker stopped beating without
    saying so (SIGKILL, OOM, a lost host) since the last call.

    A worker holds messages it has received but not started (prefetched, or countdowns of
    scheduled retries) that no lease shows, so no takeover finds them: without this they
    wait for the reconciler's grace after they were due. Whose they were the database does
    not know; so, once per such death (its heartbeat is dropped here), every contact that
    some worker may hold a message for is published again: those that no runner holds and
    that the reconciler does not yet count as overdue, each due when its scheduled retry is.
    A message that was not lost becomes a duplicate, which the lease turns away.
    """
    cutoff = now - timedelta(seconds=dead_after_s)
    dead = session.execute(
        delete(WorkerHeartbeat)
        .where(WorkerHeartbeat.beat_at < cutoff)
        .returning(WorkerHeartbeat.id)
    ).all()
    if not dead:
        return []
    rows = session.execute(
        select(Contact.id, Contact.batch_id, Contact.lease_expires_at)
        .where(
            Contact.status.in_(RUNNABLE),
            Contact.lease_owner.is_(None),
            or_(Contact.lease_expires_at.is_(None), Contact.lease_expires_at > now),
        )
        .order_by(Contact.created_at)
        .limit(limit)
    ).all()
    grace = timedelta(seconds=grace_s)
    return [
        (
            row.id,
            row.batch_id,
            max(0.0, (row.lease_expires_at - grace - now).total_seconds())
            if row.lease_expires_at is not None
            else 0.0,
        )
        for row in rows
    ]


def prune(session: Session, now: datetime, older_than_s: float) -> int:
    """Drop heartbeats of workers gone for `older_than_s` (a SIGKILL leaves its row behind)."""
    done = session.execute(
        delete(WorkerHeartbeat).where(
            WorkerHeartbeat.beat_at < now - timedelta(seconds=older_than_s)
        )
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]
