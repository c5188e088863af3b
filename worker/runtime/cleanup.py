"""Undoing what a contact made at the providers, however it ends: the compensation of a
failed contact (then `failed`) and the release of a deleted or cancelled one (then `deleted`).

Both must finish, so both meet an error the same way (`Cleanup.met`):

- a provider budget spent (`Throttled`): back when it has a token, no failure counted;
- a transient error or a rate limit: retried without a bound, on one backoff (the contact's
  runs so far, capped at `PROVISIONER_RETRY_MAX_S`; a rate limit after its `Retry-After`);
- a permanent error (refused credentials, a forbidden account): *stuck*. Retried every
  `PROVISIONER_COMPENSATION_STUCK_RETRY_S`, the wait kept in the database as the lease's due
  time, where the reconciler finds it (no broker message is held that long); marked on the
  contact (`stuck: true` in the API, `provisioner jobs stuck`, the
  `provisioner_contacts_stuck{reason}` gauge) and logged once at error level.

The terminal transaction that ends the clean-up clears the mark (`Cleanup.finished`).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session

from worker.domain.retry import RetryPolicy
from worker.providers import Permanent, ProviderError, RateLimited
from worker.runtime.budgets import Throttled
from worker.settings import Settings
from worker.store import pipeline as store
from worker.store import stuck as stuck_store
from worker.store.db import Database
from worker.store.models import Contact

log = structlog.get_logger(__name__)

# The most runs the backoff counts: its ceiling is reached long before (RETRY_MAX_S).
_MAX_COUNTED = 10


class Cleanup:
    """The error handling shared by compensation and release; `outcome` makes the
    pipeline's `Outcome`."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], datetime],
        outcome: Callable[..., Any],
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.outcome = outcome
        # The steps' backoff, without their bounds: a clean-up never gives up.
        self.policy = RetryPolicy(
            base_s=settings.retry_base_s,
            max_s=settings.retry_max_s,
            max_attempts=sys.maxsize,
            max_total_s=math.inf,
        )
        self.rng = random.Random()

    def met(
        self,
        contact: Contact,
        owner: str,
        exc: ProviderError | Throttled,
        *,
        cleanup: str,
        journal: Callable[[Session], None] | None = None,
    ) -> Any:
        """The clean-up of `contact` (`cleanup`: `compensation` or `release`) met `exc`: let
        go of the lease until it runs again (`journal` writes the step's part in the same
        transaction) and say what the caller does next."""
        now = self.clock()
        grace = self.settings.reconcile_grace_s
        if isinstance(exc, Throttled):
            state, delay, due = "wait", exc.retry_in_s, now + timedelta(seconds=exc.retry_in_s)
        elif isinstance(exc, Permanent):
            return self._stuck(contact, owner, exc, cleanup, journal, now)
        else:
            # (A 429 has already paused every worker's requests to that connection.)
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            runs = min(max(contact.deliveries, 1), _MAX_COUNTED)
            backoff = self.policy.delay(runs, 0.0, retry_after, self.rng)
            assert backoff is not None  # this policy never gives up
            state, delay, due = "retry", backoff, now + timedelta(seconds=backoff)
            log.warning(
                "compensation_retry",
                cleanup=cleanup,
                error_code=exc.code,
                error=str(exc),
                retry_in_s=round(delay, 2),
            )
        with self.db.write() as session:
            if journal is not None:
                journal(session)
            # The message scheduled for `delay` normally brings it back; the reconciler
            # steps in only if it has not by the due time plus the grace.
            store.release_lease(session, contact.id, owner, due + timedelta(seconds=grace))
        return self.outcome(state, delay)

    def _stuck(
        self,
        contact: Contact,
        owner: str,
        exc: Permanent,
        cleanup: str,
        journal: Callable[[Session], None] | None,
        now: datetime,
    ) -> Any:
        """An error that retrying soon will not cure: again at the capped cadence, and said
        loudly, once per contact."""
        wait_s = self.settings.compensation_stuck_retry_s
        with self.db.write() as session:
            if journal is not None:
                journal(session)
            first = stuck_store.mark_stuck(session, contact, owner, exc.code, now)
            store.release_lease(session, contact.id, owner, now + timedelta(seconds=wait_s))
        if first:
            log.error(
                "compensation_stuck",
                cleanup=cleanup,
                status=contact.status,
                error_code=exc.code,
                error=str(exc),
                contact_error=contact.error_code,
                retry_in_s=wait_s,
            )
        else:
            log.warning(
                "compensation_retry", cleanup=cleanup, error_code=exc.code, retry_in_s=wait_s
            )
        return self.outcome("stuck")

    @staticmethod
    def finished(session: Session, contact: Contact) -> None:
        """In the terminal transaction (`failed`, `deleted`): the contact is no longer stuck."""
        if contact.stuck_since is not None:
            stuck_store.clear(session, contact)
