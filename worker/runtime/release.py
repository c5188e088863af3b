"""Release a `deleting` contact: its release steps, journaled one by one, then `deleted`.

Run by the same runner as provisioning (`Pipeline.run`), under the contact's lease: a DELETE
of a live contact, a cancellation (the provisioning runner stops at its next step boundary
and carries on here), or a grace period that ended unpaid. Every step finds what it releases
by the contact's tag, so a crash, a redelivery or a takeover may run any of them again.
Deletion must finish: provider errors of every kind are retried, without a bound.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from worker.domain.contacts import StepStatus
from worker.domain.retry import RetryPolicy
from worker.metrics import contact_outcome, step_timer
from worker.providers import ProviderError, Providers, RateLimited
from worker.runtime.budgets import ProviderLimiter, Throttled
from worker.runtime.steps import RELEASES, StepContext
from worker.settings import Settings
from worker.store import deletion
from worker.store import pipeline as store
from worker.store.db import Database
from worker.store.models import Contact, ContactStep

log = structlog.get_logger(__name__)


class Releaser:
    """The release half of the runner: the pipeline's database, providers, budgets, clock
    and compensation policy; `outcome` makes the pipeline's `Outcome`."""

    def __init__(
        self,
        db: Database,
        providers: Providers,
        settings: Settings,
        clock: Callable[[], datetime],
        limiter: ProviderLimiter,
        policy: RetryPolicy,
        outcome: Callable[..., Any],
        changed: Callable[[Contact], None] = lambda contact: None,
    ) -> None:
        self.db, self.providers, self.settings, self.clock = db, providers, settings, clock
        self.limiter, self.policy, self.outcome = limiter, policy, outcome
        self.changed = changed  # after a status change commits (wakes the long polls)
        self.rng = random.Random()

    def run(self, contact: Contact, steps: dict[str, ContactStep], owner: str) -> Any:
        p = self
        structlog.contextvars.bind_contextvars(deleted_reason=contact.deleted_reason)
        with p.db.write() as session:
            plan = deletion.release_journal(session, contact, steps, p.clock())
        for step in plan:
            if step.status == StepStatus.DONE.value:
                continue
            with p.db.write() as session:
                started = store.start_step(
                    session, step, owner, p.clock(), p.settings.lease_s, releasing=True
                )
            if not started:
                return self.outcome("busy")
            structlog.contextvars.bind_contextvars(step=step.name, attempt=step.attempts)
            try:
                with step_timer(contact.contact_type, step.name):
                    RELEASES[step.name](self._context(contact, steps))
            except Throttled as exc:
                return self._later(contact, step, owner, exc.retry_in_s, None, unsent=True)
            except ProviderError as exc:
                retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
                if isinstance(exc, RateLimited):
                    p.limiter.pause(exc.provider, retry_after)
                failures = (step.detail or {}).get("failures", 0) + 1
                delay = self.policy.delay(min(failures, 10), 0.0, retry_after, self.rng)
                assert delay is not None  # this policy never gives up
                log.warning("release_retry", error_code=exc.code, retry_in_s=round(delay, 2))
                return self._later(contact, step, owner, delay, exc, failures=failures)
            with p.db.write() as session:
                store.record_step(session, step, StepStatus.DONE, p.clock(), owner=owner)
            log.info("step_done")
        structlog.contextvars.unbind_contextvars("step", "attempt")
        ordered = sorted(steps.values(), key=lambda s: s.position)
        events: list[str] = []
        with p.db.write() as session:
            finished = deletion.finish_deleted(session, contact, ordered, owner, p.clock(), events)
        if not finished:
            return self.outcome("busy")
        self.changed(contact)
        log.info("contact_deleted", contact_type=contact.contact_type)
        contact_outcome(contact.contact_type, "deleted")
        return self.outcome("deleted", events=tuple(events))

    def _later(
        self,
        contact: Contact,
        step: ContactStep,
        owner: str,
        delay: float,
        exc: ProviderError | None,
        *,
        unsent: bool = False,
        failures: int | None = None,
    ) -> Any:
        p = self
        now = p.clock()
        detail = dict(step.detail or {})
        if failures is not None:
            detail["failures"] = failures
        with p.db.write() as session:
            if unsent:
                store.unstart_step(session, step, owner, now, take_back_attempt=True)
            else:
                store.record_step(
                    session,
                    step,
                    StepStatus.PENDING,
                    now,
                    owner=owner,
                    detail=detail,
                    error=str(exc),
                )
            due = now + timedelta(seconds=delay + p.settings.reconcile_grace_s)
            store.release_lease(session, contact.id, owner, due)
        return self.outcome("retry" if exc is not None else "wait", delay)

    def _context(self, contact: Contact, steps: dict[str, ContactStep]) -> StepContext:
        return StepContext(contact, steps, self.providers, self.settings, self.clock())
