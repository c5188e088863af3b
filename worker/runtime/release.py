"""Release a `deleting` contact: its release steps, journaled one by one, then `deleted`.

Run by the same runner as provisioning (`Pipeline.run`), under the contact's lease: a DELETE
of a live contact, a cancellation (the provisioning runner stops at its next step boundary
and carries on here), or a grace period that ended unpaid. Every step finds what it releases
by the contact's tag, so a crash, a redelivery or a takeover may run any of them again.
Deletion must finish: an error is met as compensation's is (`worker/runtime/cleanup.py`):
retried without a bound, and a permanent one marks the contact stuck.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session

from worker.domain.contacts import StepStatus
from worker.metrics import contact_outcome, step_timer
from worker.providers import ProviderError, Providers
from worker.runtime.budgets import Throttled
from worker.runtime.cleanup import Cleanup
from worker.runtime.connections import EmailTargets
from worker.runtime.pool import PoolAccess
from worker.runtime.steps import RELEASES, StepContext
from worker.settings import Settings
from worker.store import deletion
from worker.store import pipeline as store
from worker.store.db import Database
from worker.store.models import Contact, ContactStep

log = structlog.get_logger(__name__)


class Releaser:
    """The release half of the runner: the pipeline's database, providers, email targets
    (a contact's own workspace, through its account's connection), clock and clean-up;
    `outcome` makes the pipeline's `Outcome`."""

    def __init__(
        self,
        db: Database,
        providers: Providers,
        settings: Settings,
        clock: Callable[[], datetime],
        cleanup: Cleanup,
        outcome: Callable[..., Any],
        changed: Callable[[Contact], None] = lambda contact: None,
        email_targets: EmailTargets | None = None,
    ) -> None:
        self.db, self.providers, self.settings, self.clock = db, providers, settings, clock
        self.cleanup, self.outcome, self.email_targets = cleanup, outcome, email_targets
        self.changed = changed  # after a status change commits (wakes the long polls)

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
                    RELEASES[step.name](self._context(contact, steps, owner))
            except (Throttled, ProviderError) as exc:
                return self._later(contact, step, owner, exc)
            with p.db.write() as session:
                store.record_step(session, step, StepStatus.DONE, p.clock(), owner=owner)
            log.info("step_done")
        structlog.contextvars.unbind_contextvars("step", "attempt")
        ordered = sorted(steps.values(), key=lambda s: s.position)
        events: list[str] = []
        with p.db.write() as session:
            finished = deletion.finish_deleted(session, contact, ordered, owner, p.clock(), events)
            if finished:
                self.cleanup.finished(session, contact)
        if not finished:
            return self.outcome("busy")
        self.changed(contact)
        log.info("contact_deleted", contact_type=contact.contact_type)
        contact_outcome(contact.contact_type, "deleted")
        return self.outcome("deleted", events=tuple(events))

    def _later(
        self, contact: Contact, step: ContactStep, owner: str, exc: ProviderError | Throttled
    ) -> Any:
        """The step comes back later: a throttled attempt sent nothing and is taken back; a
        failed one is journaled pending with its error."""
        now = self.clock()

        def journal(session: Session) -> None:
            if isinstance(exc, Throttled):
                store.unstart_step(session, step, owner, now, take_back_attempt=True)
            else:
                store.record_step(
                    session, step, StepStatus.PENDING, now, owner=owner, error=str(exc)
                )

        return self.cleanup.met(contact, owner, exc, cleanup="release", journal=journal)

    def _context(self, contact: Contact, steps: dict[str, ContactStep], owner: str) -> StepContext:
        return StepContext(
            contact,
            steps,
            self.providers,
            self.settings,
            self.clock(),
            self.email_targets,
            PoolAccess(self.db, self.settings),
            owner=owner,
        )
