"""What the API does for batches: accept up to `batch_max_items` contacts in one transaction,
publish them to the `bulk` queue, and count a batch's contacts by status."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from worker.app.contacts import LIST_LIMIT_MAX, ContactService, Reply, parse_json
from worker.domain.batch import (
    LINE_COUNTED,
    error_body,
    items_of,
    judge,
    parse_item,
    queue_priorities,
)
from worker.domain.contacts import SETTLED_STATUSES
from worker.domain.errors import InvalidRequest, NotFound
from worker.domain.ids import is_id, new_id
from worker.domain.pricing import cost_cents
from worker.domain.views import contact_view
from worker.store import batches as store
from worker.store import contacts as contacts_store
from worker.store import idempotency as idem_store

log = structlog.get_logger(__name__)

BULK_QUEUE = "bulk"
# A concurrent acceptance can slip a live contact in only through paths that do not take the
# account's row lock first (none today); the unique index then aborts the transaction, and
# the batch is judged again against what is now there.
_ATTEMPTS = 3


class BatchService:
    def __init__(self, contacts: ContactService) -> None:
        self.contacts = contacts
        self.db = contacts.db
        self.settings = contacts.settings

    def submit(
        self, account_id: int, raw_body: bytes, *, path: str, idempotency_key: str | None = None
    ) -> Reply:
        """Accept what can be accepted of a batch; the reply lists every item's fate.

        Raises a DomainError only for a body that is not a batch at all (422 naming `items`).
        """
        return self.contacts.idempotent(
            account_id,
            idempotency_key,
            path,
            raw_body,
            lambda key: self._submit(account_id, raw_body, path, key),
        )

    def _submit(self, account_id: int, raw_body: bytes, path: str, key: str | None) -> Reply:
        raw_items = items_of(parse_json(raw_body), self.settings.batch_max_items)
        items = [parse_item(index, raw) for index, raw in enumerate(raw_items)]
        items, routes = self.contacts.route_items(account_id, items)
        assistants = [item.assistant_id for item in items if item.assistant_id is not None]
        prices, monthly = self.contacts.prices, self.contacts.monthly
        for attempt in range(1, _ATTEMPTS + 1):
            batch_id = new_id("bt")
            now = self.contacts.clock()
            try:
                with self.db.write() as session:
                    state = store.lock_state(session, account_id, assistants)
                    waiting = store.queued_ahead(session, account_id, LINE_COUNTED)
                    verdicts = judge(
                        items,
                        owned=state.owned,
                        live=state.live,
                        available_cents=state.available_cents,
                        cost_of=lambda kind: cost_cents(kind, prices),
                    )
                    accepted = [
                        (
                            index,
                            contacts_store.pending_contact(
                                account_id,
                                assistant_id,
                                request,
                                cost,
                                now,
                                cost_cents(request.contact_type, monthly),
                            ),
                        )
                        for index, assistant_id, request, cost in verdicts.accepted
                    ]
                    for index, contact in accepted:
                        contact.connection_id = routes.get(index)  # None: the platform's
                    store.insert_batch(session, batch_id, account_id, [c for _, c in accepted], now)
                    body = {
                        "info": {
                            "batch_id": batch_id,
                            "accepted": [
                                {"index": index, "contact_id": c.id} for index, c in accepted
                            ],
                            "rejected": [
                                {"index": index, "error": error_body(error)}
                                for index, error in verdicts.rejected
                            ],
                        }
                    }
                    reply = Reply(202, body, {"Location": f"{path}/{batch_id}"})
                    if key is not None:
                        idem_store.complete(
                            session,
                            account_id,
                            key,
                            idem_store.StoredResponse(reply.status, reply.body, reply.headers),
                        )
            except IntegrityError:
                if attempt == _ATTEMPTS:
                    raise
                log.info("batch_conflict_retry", attempt=attempt)
                continue
            break
        log.info(
            "batch_accepted",
            batch_id=batch_id,
            accepted=len(accepted),
            rejected=len(verdicts.rejected),
        )
        # After the commit, all in one Redis pipeline; a lost publish leaves the contacts
        # pending, and the reconciler enqueues them (to `bulk`, by their batch_id).
        # Each at its place in the account's line, so another account's later, smaller batch
        # is not queued behind all of this one (worker.domain.batch.queue_priorities).
        published = [c for _, c in accepted]
        priorities = queue_priorities(waiting, len(published))
        self.contacts.publish(published, queue=BULK_QUEUE, priorities=priorities)
        return reply

    def get(self, account_id: int, batch_id: str) -> dict[str, Any]:
        if not is_id("bt", batch_id):
            raise NotFound(f"no batch {batch_id}")
        with self.db.read() as session:
            found = store.counts(session, account_id, batch_id)
        if found is None:
            raise NotFound(f"no batch {batch_id}")
        terminal = {s.value for s in SETTLED_STATUSES}
        open_ = sum(n for status, n in found.counts.items() if status not in terminal)
        return {
            "batch_id": found.batch_id,
            "total": found.total,
            "counts": found.counts,
            "done": open_ == 0,
        }

    def contacts_of(
        self, account_id: int, batch_id: str, limit: int, starting_after: str | None
    ) -> list[dict[str, Any]]:
        """A page of the batch's contacts, in id order: what a client needs for its results
        (address, status, error) without one request per contact."""
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidRequest(
                "limit out of range", {"limit": f"must be between 1 and {LIST_LIMIT_MAX}"}
            )
        if starting_after is not None and not is_id("ct", starting_after):
            raise InvalidRequest(
                "starting_after is not a contact id", {"starting_after": "must be a contact id"}
            )
        if not is_id("bt", batch_id):
            raise NotFound(f"no batch {batch_id}")
        with self.db.read() as session:
            if not store.exists(session, account_id, batch_id):
                raise NotFound(f"no batch {batch_id}")
            rows = store.batch_contacts(session, account_id, batch_id, limit, starting_after)
            steps = contacts_store.steps_for(session, [c.id for c in rows])
            return [contact_view(c, steps[c.id]) for c in rows]
