"""A contact's later life, as the API, the operators and beat ask for it: deletion, the
credits ledger, and the monthly billing pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from worker.app.contacts import MAX_ID, Publisher, Reply
from worker.domain.contacts import ContactStatus
from worker.domain.errors import InvalidRequest, NotFound
from worker.domain.ids import is_id
from worker.domain.views import contact_view, ledger_view
from worker.live import NoNotifier, Notifier
from worker.settings import Settings
from worker.store import billing, contacts, credits, deletion
from worker.store.db import Database

log = structlog.get_logger(__name__)

LEDGER_LIMIT_MAX = 1000


class EventPublisher(Protocol):
    def deliver_webhooks(self, event_ids: list[str]) -> None: ...


@dataclass(frozen=True)
class PassResult:
    charged: int  # monthly fees charged (one per contact and month)
    grace_period: int  # contacts that entered their grace period
    deleted: int  # contacts whose grace period ended unpaid, now being deleted
    restored: int  # contacts back to active after paying what they owed

    def as_dict(self) -> dict[str, int]:
        return {
            "charged": self.charged,
            "grace_period": self.grace_period,
            "deleted": self.deleted,
            "restored": self.restored,
        }


class LifecycleService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        publisher: Publisher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        notifier: Notifier | NoNotifier | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.publisher = publisher
        self.clock = clock
        # Wakes the long polls and event streams waiting on a contact after its move commits.
        self.notifier = notifier or NoNotifier()

    # --- deletion ----------------------------------------------------------------------------

    def delete(self, account_id: int, assistant_id: int, contact_id: str) -> Reply:
        """`deleting` and 202 (a worker releases it); a repeat answers the same contact with
        202 while it is being deleted; a failed or deleted one answers 200, unchanged."""
        if not is_id("ct", contact_id) or not 0 < assistant_id <= MAX_ID:
            raise NotFound(f"no contact {contact_id} for assistant {assistant_id}")
        with self.db.write() as session:
            found = deletion.request_deletion(
                session,
                account_id,
                assistant_id,
                contact_id,
                self.clock(),
                self.settings.reconcile_grace_s,
            )
            if found is None:
                raise NotFound(f"no contact {contact_id} for assistant {assistant_id}")
            steps = contacts.steps_for(session, [contact_id])[contact_id]
            view = contact_view(found.contact, steps)
        if found.moved:
            c = found.contact
            self.notifier.changed(c.id, c.batch_id, c.account_id, c.status)
            log.info(
                "contact_deletion_requested",
                contact_id=contact_id,
                deleted_reason=found.contact.deleted_reason,
            )
            self._run([contact_id], queue="bulk" if found.contact.batch_id else "interactive")
        status = 202 if found.contact.status == ContactStatus.DELETING.value else 200
        return Reply(status, {"info": view})

    def _run(self, contact_ids: list[str], queue: str) -> None:
        """Publish the runner's task after the commit; a lost publish leaves the contacts to
        the reconciler (they are due after the grace)."""
        for contact_id in contact_ids:
            try:
                self.publisher.provision(contact_id, queue=queue)
            except Exception as exc:
                log.warning("publish_failed", contact_id=contact_id, error=type(exc).__name__)

    # --- the ledger --------------------------------------------------------------------------

    def ledger(
        self, account_id: int, limit: int = 100, starting_after: str | None = None
    ) -> list[dict[str, Any]]:
        if not 1 <= limit <= LEDGER_LIMIT_MAX:
            raise InvalidRequest(
                "limit out of range", {"limit": f"must be between 1 and {LEDGER_LIMIT_MAX}"}
            )
        after: int | None = None
        if starting_after is not None:
            # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
            if (
                not (starting_after.isascii() and starting_after.isdigit())
                or len(starting_after) > 18
            ):
                raise InvalidRequest(
                    "starting_after is not a ledger entry id",
                    {"starting_after": "must be the id of a ledger entry"},
                )
            after = int(starting_after)
        with self.db.read() as session:
            rows = credits.ledger_page(session, account_id, limit, after)
        return [ledger_view(row) for row in rows]

    # --- billing -----------------------------------------------------------------------------

    def billing_pass(
        self,
        now: datetime | None = None,
        account_id: int | None = None,
        events: EventPublisher | None = None,
    ) -> PassResult:
        """Charge every live contact the months it owes as of `now`, account by account (or
        only `account_id`'s, after a top-up); move contacts into, out of and past their grace
        period. Safe to run at any time, as often as wanted, and several at once."""
        now = now or self.clock()
        charged = grace = unpaid = restored = 0
        after = 0
        while True:
            with self.db.read() as session:
                due = (
                    [account_id]
                    if account_id is not None
                    else billing.due_accounts(session, now, after, 500)
                )
            for account in due:
                more, last_id = True, ""
                while more:
                    with self.db.write() as session:
                        billed = billing.bill_account(
                            session,
                            account,
                            now,
                            self.settings.grace_period_days,
                            after_id=last_id,
                        )
                    more, last_id = billed.more, billed.last_id
                    charged += billed.fees
                    grace += len(billed.grace_period)
                    unpaid += len(billed.unpaid)
                    restored += len(billed.restored)
                    for contact_id, status in billed.moves():
                        self.notifier.changed(contact_id, None, account, status)
                    self._run(billed.unpaid, queue="bulk")
                    if billed.events and events is not None:
                        try:
                            events.deliver_webhooks(billed.events)
                        except Exception as exc:  # the webhook relay finds them later
                            log.warning("webhook_publish_failed", error=type(exc).__name__)
            if account_id is not None or len(due) < 500:
                break
            after = due[-1]
        result = PassResult(charged, grace, unpaid, restored)
        if charged or grace or unpaid or restored:
            log.info("billing_pass", month=now.strftime("%Y-%m"), **result.as_dict())
        return result
