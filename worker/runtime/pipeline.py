"""Run a contact's provider steps to `active`, or to `failed` with nothing left behind.

No Celery here: `run` takes a contact id and says what should happen next (nothing, or run
again after a delay). The Celery task maps that onto the broker.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from worker.app.regulations import mark_stale
from worker.domain.compensation import attempt_made_nothing, nothing_created
from worker.domain.contacts import (
    ContactStatus,
    ContactType,
    FirstRun,
    StepStatus,
    read_only_first_step,
    step_plan,
)
from worker.domain.regulatory import LOCAL
from worker.domain.retry import RetryPolicy
from worker.live import NoNotifier, Notifier
from worker.metrics import contact_outcome, step_timer
from worker.providers import Permanent, ProviderError, Providers, RateLimited
from worker.providers.errors import ADDRESS_REQUIRED, BUNDLE_REQUIRED, NUMBER_TYPE_NOT_SOLD
from worker.runtime.budgets import ProviderLimiter, Throttled, mark_bulk, requests_sent
from worker.runtime.cleanup import Cleanup
from worker.runtime.connections import EmailTargets
from worker.runtime.number_pool import NumberPool
from worker.runtime.pool import PoolAccess
from worker.runtime.release import Releaser
from worker.runtime.steps import (
    STEPS,
    StepContext,
    StepResult,
    Wait,
    address_of,
    compensate,
    needs_compensation,
    utcnow,
)
from worker.settings import Settings
from worker.store import first_lease, journal
from worker.store import pipeline as store
from worker.store.credits import FeeNotCovered
from worker.store.db import Database
from worker.store.journal import LeaseLost
from worker.store.models import Contact, ContactStep

log = structlog.get_logger(__name__)

# Steps whose request makes something at a provider: the lease is confirmed just before each.
# Purchases Twilio refused for want of a bundle (21649) or an address (21631), and searches
# of a list Twilio does not have in the country (404): what each contradicts in the cache.
REGULATORY_REFUSALS = {
    BUNDLE_REQUIRED: "bundle",
    ADDRESS_REQUIRED: "address",
    NUMBER_TYPE_NOT_SOLD: "sold",
}
CREATING = frozenset({"buy_number", "create_sender", "create_user", "assign_pool_sender"})


class _Refused(Exception):
    """A later statement of the transaction was refused: roll back what came before it."""


def _stamp() -> tuple[float, float]:
    """Now, on the monotonic and on the wall clock: a pause is measured on both (a frozen
    VM may not advance the first, a clock step may move the second)."""
    return time.monotonic(), time.time()


def no_checkpoint(point: str, contact_id: str, owner: str) -> None:
    """The runner's checkpoints do nothing outside tests (they freeze a runner there)."""


@dataclass(frozen=True)
class Outcome:
    """What the caller should do next: nothing (`again_in_s` None), or run again later;
    `events`: the outbox events a terminal transition committed, whose deliveries the caller
    publishes (if that publish is lost, the webhook relay finds them after its grace)."""

    state: str  # active | failed | deleted | busy | gone | retry | wait | stuck
    again_in_s: float | None = None
    events: tuple[str, ...] = ()


def _policy(settings: Settings) -> RetryPolicy:
    """The steps' bounded policy (a clean-up's, unbounded, is `Cleanup`'s)."""
    return RetryPolicy(
        base_s=settings.retry_base_s,
        max_s=settings.retry_max_s,
        max_attempts=settings.step_max_attempts,
        max_total_s=settings.step_max_total_s,
    )


class Pipeline:
    def __init__(
        self,
        db: Database,
        providers: Providers,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        limiter: ProviderLimiter | None = None,
        notifier: Notifier | NoNotifier | None = None,
        number_pool: NumberPool | None = None,
    ) -> None:
        self.db = db
        self.providers = providers
        self.settings = settings
        self.clock = clock
        # The shared provider rate budgets gate every request these clients send.
        self.limiter = limiter or ProviderLimiter.from_settings(settings)
        self.limiter.install(providers)
        # Wakes the API's long polls and event streams after each status change commits.
        self.notifier = notifier or Notifier.from_settings(settings)
        self.email_targets = EmailTargets(
            db, settings, providers, on_new_client=self.limiter.install_client
        )
        self.policy = _policy(settings)
        # Number candidates shared by every worker (`PROVISIONER_NUMBER_POOL`).
        self.number_pool = number_pool or NumberPool.from_settings(settings)
        self.pool = PoolAccess(db, settings)
        # Called at the points where a frozen runner matters (tests freeze it there).
        self.checkpoint: Callable[[str, str, str], None] = no_checkpoint
        # Per thread: when this thread's run last confirmed its lease (see `_confirm`).
        self._local = threading.local()
        self.rng = random.Random()
        self.grace = timedelta(days=settings.grace_period_days)
        # Compensation and release: one way to meet an error, one stuck state.
        self.cleanup = Cleanup(db, settings, clock, Outcome)
        self.releaser = Releaser(
            db,
            providers,
            settings,
            clock,
            self.cleanup,
            Outcome,
            self._changed,
            self.email_targets,
        )

    def run(self, contact_id: str, owner: str, first_run: FirstRun | None = None) -> Outcome:
        """Run the contact as far as it goes now. `first_run`: the task message's hint (see
        `FirstRun`): on PostgreSQL the lease and a first run's journal are then one
        statement, before the row is read.

        Every write under the lease is fenced (the owner checked in the statement itself); one
        that finds the lease gone (`LeaseLost`) rolls its transaction back and the run stops:
        another runner holds the contact."""
        self._local.confirmed = None
        try:
            return self._run(contact_id, owner, first_run)
        except LeaseLost as exc:
            log.warning("lease_lost", contact_id=contact_id, error=str(exc))
            return Outcome("busy")

    def _run(self, contact_id: str, owner: str, first_run: FirstRun | None) -> Outcome:
        # One transaction per step in the common case: take the lease and start the first
        # step; finish each step and start the next; finish the last and activate. Nothing
        # is sent to a provider before the lease: the liveness takeover sees every run. A
        # phone or WhatsApp contact's first step only searches, so a new journal has it done
        # and the purchase started, and the search is made right after the lease, in memory,
        # as the first part of the purchase's first attempt: one transaction fewer.
        now = self.clock()
        # Taken before the lease's statement: the lease runs from no earlier than this.
        stamp = _stamp()
        ahead = None
        if first_run is not None:
            kind = first_run.contact_type
            ahead = journal.folded(kind, step_plan(kind))
        if ahead is not None and first_run is not None and not self.db.is_sqlite:
            taken = self._take_first_lease(contact_id, owner, now, ahead, first_run)
            if isinstance(taken, Outcome):
                return taken
            lease, step = taken
        else:
            with self.db.write() as session:
                lease = store.take_lease(
                    session, contact_id, owner, now, self.settings.lease_s, fold=True
                )
                step = self._first_step(lease)
                if lease is not None and step is not None and lease.started is None:
                    # The lease taken just above runs until the same expiry: no renewal.
                    store.start_step(session, step, owner, now, self.settings.lease_s, renew=False)
        if lease is None:
            return Outcome("busy")  # finished, missing, or another runner holds it
        self._local.confirmed = stamp
        contact, steps = lease.contact, lease.steps
        # Every lease, not only the first (pending -> provisioning): one PUBLISH is cheaper
        # than telling the cases apart, and a woken waiter that sees no change waits on.
        self._changed(contact)
        structlog.contextvars.bind_contextvars(assistant_id=contact.assistant_id)
        mark_bulk(contact.batch_id is not None)  # a batch's work draws on the bulk share
        if contact.status == ContactStatus.DELETING.value:
            return self.releaser.run(contact, steps, owner)
        if contact.takeovers > self.settings.max_deliveries:
            return self._fail(
                contact,
                steps,
                owner,
                "worker_lost",
                f"the worker running this contact died {contact.takeovers} times",
            )
        if contact.error_code:  # failing: a compensation that did not finish
            return self._fail(contact, steps, owner, contact.error_code, contact.error_message)
        if step is None:  # every step done by earlier deliveries; only activation is left
            return self._finish_steps(contact, steps, None, None, owner)
        if lease.started is not None:  # this lease made the journal
            searched = self._search_first(contact, steps, step, owner)
            if isinstance(searched, Outcome):
                return searched
            if searched is not None:  # no numbers in that country: nothing was created
                log.warning("step_failed", error_code=searched.code, error=str(searched))
                self._journal_failure(step, owner, str(searched), take_back=True)
                return self._fail(contact, steps, owner, searched.code, str(searched))
        while True:
            outcome = self._run_step(contact, steps, step, owner)
            if isinstance(outcome, Outcome):
                return outcome
            step = outcome

    def _first_step(self, lease: store.Lease | None) -> ContactStep | None:
        """The step this run starts with, if it provisions (not releasing, not failing)."""
        if lease is None or lease.contact.status == ContactStatus.DELETING:
            return None
        if not self._healthy(lease.contact):
            return None
        return lease.started or self._next(lease.steps)

    def _take_first_lease(
        self, contact_id: str, owner: str, now: datetime, ahead: store.Ahead, first_run: FirstRun
    ) -> tuple[store.Lease | None, ContactStep | None] | Outcome:
        """On PostgreSQL, a first run's lease and new journal in one autocommit statement
        (`first_lease`). A redelivery's lease comes from the same statement, and its next
        step is started in a transaction of its own, under the lease's owner check."""
        with self.db.autocommit() as connection:
            lease = first_lease.take_first_lease(
                connection,
                contact_id,
                owner,
                now,
                self.settings.lease_s,
                ahead=ahead,
                contact_type=first_run.contact_type,
            )
        step = self._first_step(lease)
        if lease is None or step is None or lease.started is not None:
            return lease, step
        with self.db.write() as session:
            started = store.start_step(session, step, owner, now, self.settings.lease_s)
        if not started:  # a DELETE came in between, or the lease went to another runner
            return self._stopped(lease.contact, lease.steps, owner)
        return lease, step

    def _search_first(
        self, contact: Contact, steps: dict[str, ContactStep], started: ContactStep, owner: str
    ) -> Outcome | Permanent | None:
        """Make a new journal's folded read-only first step (`journal.folded`: the number
        search, journaled done with the lease), in memory: its candidates go to the purchase
        that follows (`started`). A permanent refusal (no numbers in the country) is
        returned, for the contact to fail with nothing created. A transient error or a spent
        budget unfolds it (`_unfold`): the search is then a step of its own, retried as any."""
        name = read_only_first_step(ContactType(contact.contact_type))
        if name is None or name not in steps or not (steps[name].detail or {}).get("folded"):
            return None
        try:
            with step_timer(contact.contact_type, name):
                result = STEPS[name](self._context(contact, steps, owner), True)
        except Permanent as exc:
            if exc.code in REGULATORY_REFUSALS:  # Twilio has no such list (any more)
                self._regulations_contradicted(contact, REGULATORY_REFUSALS[exc.code])
            return exc
        except Throttled as exc:
            return self._unfold(contact, steps[name], started, owner, exc.retry_in_s, None)
        except ProviderError as exc:
            # (A 429 has already paused every worker's requests to that connection.)
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            delay = self.policy.delay(1, 0.0, retry_after, self.rng)
            assert delay is not None  # one failure is within every bound
            log.info("step_retry", step=name, error_code=exc.code, retry_in_s=round(delay, 2))
            return self._unfold(contact, steps[name], started, owner, delay, exc)
        if isinstance(result, StepResult):
            steps[name].detail = {**result.detail, "folded": True}
            log.info("step_done", step=name, attempt=1)
        return None

    def _keep_search(
        self, session: Session, steps: dict[str, ContactStep], owner: str, now: datetime
    ) -> None:
        """A purchase that will run again keeps the folded search's candidates in the journal
        (written with the retry), so that its next attempt does not search again."""
        for step in steps.values():
            detail = step.detail or {}
            if detail.get("folded") and "candidates" in detail and not detail.get("kept"):
                store.record_step(
                    session,
                    step,
                    StepStatus.DONE,
                    now,
                    owner=owner,
                    detail={**detail, "kept": True},
                )

    def _unfold(
        self,
        contact: Contact,
        search: ContactStep,
        started: ContactStep,
        owner: str,
        delay: float,
        exc: ProviderError | None,
    ) -> Outcome:
        """The folded search did not get an answer: journal it pending, a failure counted
        when `exc` (else a spent budget: no attempt, and the time held back is not counted, as
        in `_throttled`), the purchase back to never attempted, and let go until `delay`."""
        now = self.clock()
        with self.db.write() as session:
            store.unstart_step(session, started, owner, now, take_back_attempt=True)
            store.record_step(
                session,
                search,
                StepStatus.PENDING,
                now,
                owner=owner,
                detail={"failures": 1} if exc is not None else {},
                error=str(exc) if exc is not None else None,
                attempts=None if exc is not None else search.attempts - 1,
            )
            if exc is None:
                store.hold_back(session, contact, owner, delay, now)
            store.release_lease(
                session, contact.id, owner, self._due(now + timedelta(seconds=delay))
            )
        return Outcome("retry" if exc is not None else "wait", delay)

    def _healthy(self, contact: Contact) -> bool:
        return contact.takeovers <= self.settings.max_deliveries and not contact.error_code

    @staticmethod
    def _next(steps: dict[str, ContactStep]) -> ContactStep | None:
        """The first step not journaled as done, in plan order."""
        for step in sorted(steps.values(), key=lambda s: s.position):
            if step.status != StepStatus.DONE.value:
                return step
        return None

    # --- one step ------------------------------------------------------------------------------

    def _run_step(
        self, contact: Contact, steps: dict[str, ContactStep], step: ContactStep, owner: str
    ) -> Outcome | ContactStep:
        """Run a started step; the next step (already started), or what to do next."""
        structlog.contextvars.bind_contextvars(step=step.name, attempt=step.attempts)
        if step.name in CREATING:
            self.checkpoint("before_create", contact.id, owner)
            step.attempts = self._confirm(contact, owner, step)
        # The attempts as the database answered them under the lease, just now (`start_step`,
        # `_confirm`): the first attempt skips the look-up by tag, any other makes it.
        first = step.attempts == 1
        sent = requests_sent()
        try:
            with step_timer(contact.contact_type, step.name):
                result = STEPS[step.name](self._context(contact, steps, owner), first)
        except Throttled as exc:
            return self._throttled(
                contact, step, owner, exc, unsent=requests_sent() == sent, contact_steps=steps
            )
        except Permanent as exc:
            log.warning("step_failed", error_code=exc.code, error=str(exc))
            if exc.code in REGULATORY_REFUSALS:
                self._regulations_contradicted(contact, REGULATORY_REFUSALS[exc.code])
            # An attempt that made nothing is not counted: the journal then still proves
            # what was (not) sent, and a contact that created nothing fails without clean-up.
            made_nothing = attempt_made_nothing(sent=requests_sent() != sent, code=exc.code)
            self._journal_failure(step, owner, str(exc), take_back=made_nothing)
            return self._fail(contact, steps, owner, exc.code, str(exc))
        except ProviderError as exc:  # retryable, rate-limited
            return self._retry(contact, steps, step, owner, exc)
        self.checkpoint("after_request", contact.id, owner)
        if isinstance(result, Wait):
            due = self.clock() + timedelta(seconds=result.delay_s)
            # A poll that got an answer is an attempt in the journal but no failure: the retry
            # budget counts consecutive failures, so it starts again here.
            detail = {**result.detail, "polls": (step.detail or {}).get("polls", 0) + 1}
            with self.db.write() as session:
                store.record_step(
                    session, step, StepStatus.RUNNING, self.clock(), owner=owner, detail=detail
                )
                store.release_lease(session, contact.id, owner, self._due(due))
            log.info("step_waiting", wait_s=result.delay_s, **result.detail)
            return Outcome("wait", result.delay_s)
        return self._finish_steps(contact, steps, step, result, owner)

    def _finish_steps(
        self,
        contact: Contact,
        steps: dict[str, ContactStep],
        step: ContactStep | None,
        result: StepResult | None,
        owner: str,
    ) -> Outcome | ContactStep:
        """Journal `step` done and, in the same transaction, start the next one or activate."""
        now = self.clock()
        events: list[str] = []
        done = None
        if step is not None and result is not None:
            done = journal.mark_done(
                step, now, provider_id=result.provider_id, detail=result.detail
            )
        following = self._next(steps)
        if following is not None:
            # One transaction: the step done and the next started, or neither (a journal
            # write is never committed when the start after it is refused).
            stamp = _stamp()
            try:
                with self.db.write() as session:
                    if done is not None:
                        journal.write_journal(session, done, owner)
                        self.checkpoint("in_transaction", contact.id, owner)
                    if not store.start_step(session, following, owner, now, self.settings.lease_s):
                        raise _Refused
                started = True
                self._local.confirmed = stamp
            except _Refused:
                started = False
        else:
            started = self._activate(contact, steps, owner, now, events, done)
        if step is not None and result is not None:
            log.info("step_done", provider_id=result.provider_id)
        if not started:
            # Our lease expired and another runner took over, or a DELETE cancelled the
            # contact: then it is ours to release.
            return self._stopped(contact, steps, owner)
        if following is not None:
            return following
        self._changed(contact)
        structlog.contextvars.unbind_contextvars("step", "attempt")
        log.info("contact_active", contact_type=contact.contact_type, address=contact.address)
        contact_outcome(contact.contact_type, "active")
        return Outcome("active", events=tuple(events))

    def _activate(
        self,
        contact: Contact,
        steps: dict[str, ContactStep],
        owner: str,
        now: datetime,
        events: list[str],
        done: journal.JournalWrite | None,
    ) -> bool:
        """The contact `active`, in a transaction whose COMMIT goes with the balance's UPDATE
        (`store.activate(commit=True)`). If the credits left cannot pay the month's fee that
        commits nothing, and the activation runs again the way that starts the grace period."""
        ordered = sorted(steps.values(), key=lambda s: s.position)
        address = address_of(self._context(contact, steps, owner))
        args = (contact, ordered, owner, address, now, events, self.grace)
        try:
            with self.db.write() as session:
                return store.activate(session, *args, last=done, commit=True)
        except FeeNotCovered:
            log.info("activation_fee_not_covered")
        with self.db.write() as session:
            return store.activate(session, *args, last=done)

    def _retry(
        self,
        contact: Contact,
        steps: dict[str, ContactStep],
        step: ContactStep,
        owner: str,
        exc: ProviderError,
    ) -> Outcome:
        now = self.clock()
        elapsed = (now - (contact.started_at or now)).total_seconds()
        # A 429 has already paused every worker's requests to that connection (the
        # limiter's guard around each provider call).
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        detail = dict(step.detail or {})
        detail["failures"] = failures = detail.get("failures", 0) + 1
        delay = self.policy.delay(failures, elapsed, retry_after, self.rng)
        if delay is None:
            log.warning("step_gave_up", error_code=exc.code, error=str(exc))
            self._journal_failure(step, owner, str(exc))
            message = f"{step.name} failed after {step.attempts} attempts: {exc}"
            return self._fail(contact, steps, owner, exc.code or "provider_unavailable", message)
        with self.db.write() as session:
            self._keep_search(session, steps, owner, now)
            store.record_step(
                session, step, StepStatus.PENDING, now, owner=owner, detail=detail, error=str(exc)
            )
            store.release_lease(
                session, contact.id, owner, self._due(now + timedelta(seconds=delay))
            )
        log.info("step_retry", error_code=exc.code, retry_in_s=round(delay, 2))
        return Outcome("retry", delay)

    def _throttled(
        self,
        contact: Contact,
        step: ContactStep,
        owner: str,
        exc: Throttled,
        *,
        unsent: bool,
        contact_steps: dict[str, ContactStep],
    ) -> Outcome:
        """A provider budget is spent: come back when it has a token. Not a failure, and the
        wait does not count against the retry bound. If this attempt sent nothing it is taken
        back, so the step's next run is still its first (and skips the look-up that only a
        request sent before makes necessary)."""
        now = self.clock()
        with self.db.write() as session:
            self._keep_search(session, contact_steps, owner, now)
            store.unstart_step(session, step, owner, now, take_back_attempt=unsent)
            store.hold_back(session, contact, owner, exc.retry_in_s, now)
            store.release_lease(
                session, contact.id, owner, self._due(now + timedelta(seconds=exc.retry_in_s))
            )
        return Outcome("wait", exc.retry_in_s)

    def _regulations_contradicted(self, contact: Contact, refused: str) -> None:
        """Twilio refused the purchase for want of a bundle or an address, or has no list of
        the contact's number type in its country: what the cache says of that country and
        type, where it said none was needed (or that the type is sold), is marked stale
        (refetched first by the next refresh). Best effort: the contact fails with Twilio's
        code either way."""
        request = contact.request or {}
        try:
            mark_stale(
                self.db,
                str(request.get("phone_country") or "US"),
                str(request.get("phone_number_type") or LOCAL),
                refused,
            )
        except Exception as exc:
            log.warning("regulations_not_marked_stale", error=type(exc).__name__)

    # --- failing -----------------------------------------------------------------------------

    def _fail(
        self,
        contact: Contact,
        steps: dict[str, ContactStep],
        owner: str,
        code: str,
        message: str | None,
    ) -> Outcome:
        """Compensate, then `failed`. The error is recorded first: a crash or a provider error
        during compensation leaves the contact failing, and the next delivery resumes here."""
        message = message or code
        structlog.contextvars.bind_contextvars(step="compensate")
        if contact.error_code is None:
            self.checkpoint("before_fail", contact.id, owner)
            with self.db.write() as session:
                marked = store.mark_failing(session, contact, owner, code, message, self.clock())
            if not marked:  # another runner holds the contact now: nothing here is ours to undo
                log.warning("lease_lost", contact_id=contact.id, error="mark_failing refused")
                return Outcome("busy")
        try:
            # Nothing to delete when the journal proves no creating request was ever sent.
            if not nothing_created(steps.values()) or needs_compensation(contact):
                self.checkpoint("before_compensate", contact.id, owner)
                self._confirm(contact, owner)
                compensate(self._context(contact, steps, owner))
        except (Throttled, ProviderError) as exc:
            # Compensation must finish, whatever the error: as a release does (`Cleanup`).
            return self.cleanup.met(contact, owner, exc, cleanup="compensation")
        ordered = sorted(steps.values(), key=lambda s: s.position)
        events: list[str] = []
        with self.db.write() as session:
            failed = store.fail(session, contact, ordered, owner, self.clock(), events)
            if failed:
                self.cleanup.finished(session, contact)
        if not failed:
            return self._stopped(contact, steps, owner)
        self._changed(contact)
        log.warning("contact_failed", error_code=code, error=message)
        contact_outcome(contact.contact_type, "failed")
        return Outcome("failed", events=tuple(events))

    # --- helpers -----------------------------------------------------------------------------

    def _stopped(self, contact: Contact, steps: dict[str, ContactStep], owner: str) -> Outcome:
        """A write of ours found the contact no longer provisioning: if a DELETE cancelled it
        while we held the lease, release it now (what was made is removed, nothing charged);
        else another runner has it."""
        with self.db.peek() as connection:
            now = store.peek(connection, contact.id)
        if now is None or now.lease_owner != owner:
            log.warning("lease_lost", contact_id=contact.id, error="a write under it was refused")
            return Outcome("busy")
        if now.status != ContactStatus.DELETING.value:
            return Outcome("busy")
        log.info("contact_cancelled", deleted_reason=now.deleted_reason)
        return self.releaser.run(now, steps, owner)

    def _changed(self, contact: Contact) -> None:
        self.notifier.changed(contact.id, contact.batch_id, contact.account_id, contact.status)

    def _confirm(self, contact: Contact, owner: str, step: ContactStep | None = None) -> int:
        """Check the lease just before a creating request or a compensation: if this run last
        confirmed it more than `lease_recheck_s` ago (a pause: GC, a frozen VM, SIGSTOP),
        renew it, and stop (`LeaseLost`) if it is not ours any more. The step's attempts as
        the journal has them (the ones known from the last confirmation when that is recent:
        no runner can lose its lease faster than `worker_dead_after_s`)."""
        known = step.attempts if step is not None else 0
        last = getattr(self._local, "confirmed", None)
        now_m, now_w = _stamp()
        limit = self.settings.lease_recheck_s
        if last is not None and now_m - last[0] <= limit and now_w - last[1] <= limit:
            return known
        stamp = _stamp()
        with self._confirming() as connection:
            attempts = store.confirm_lease(
                connection,
                contact.id,
                owner,
                self.clock(),
                self.settings.lease_s,
                step.id if step is not None else None,
            )
        if attempts is None:
            raise LeaseLost(f"contact {contact.id}: the lease is not {owner}'s")
        self._local.confirmed = stamp
        return attempts if step is not None else 0

    def _confirming(self) -> AbstractContextManager[Connection]:
        """One statement: autocommit on PostgreSQL (one round trip), a write on SQLite."""
        if self.db.is_sqlite:
            return _session_connection(self.db)
        return self.db.autocommit()

    def _journal_failure(
        self, step: ContactStep, owner: str, error: str, *, take_back: bool = False
    ) -> None:
        attempts = step.attempts - 1 if take_back else None
        with self.db.write() as session:
            store.record_step(
                session,
                step,
                StepStatus.FAILED,
                self.clock(),
                owner=owner,
                error=error,
                attempts=attempts,
            )

    def _due(self, at: datetime) -> datetime:
        # The scheduled message normally comes back at `at`; the reconciler steps in only if
        # it has not by `at` plus the grace (lost message, flushed broker).
        return at + timedelta(seconds=self.settings.reconcile_grace_s)

    def _context(self, contact: Contact, steps: dict[str, ContactStep], owner: str) -> StepContext:
        return StepContext(
            contact,
            steps,
            self.providers,
            self.settings,
            self.clock(),
            self.email_targets,
            self.pool,
            number_pool=self.number_pool,
            owner=owner,
        )

    def close(self) -> None:
        """Stop what the pipeline runs beside its tasks (the pool's background searches)."""
        if self.number_pool is not None:
            self.number_pool.close()


@contextmanager
def _session_connection(db: Database) -> Iterator[Connection]:
    with db.write() as session:
        yield session.connection()


__all__ = ["CREATING", "Outcome", "Pipeline"]
