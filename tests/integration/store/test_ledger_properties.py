"""Any interleaving of accept (reserve), activate (capture), fail (release), redelivered
settlements and operator retries leaves the account and its ledger balanced.

A hypothesis state machine drives the real service and store against the real database; after
every step the account row, the ledger and a plain model of the contacts must agree.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from worker.app.contacts import ContactService
from worker.app.operations import retry_contact
from worker.domain.errors import ContactExists, InsufficientCredits, NotFound
from worker.store import credits
from worker.store import pipeline as pipeline_store
from worker.store.models import Account, Contact, LedgerEntry

START_CENTS = 500
BODIES = {
    "phone": {"contact_type": "phone", "phone_country": "US"},
    "email": {"contact_type": "email", "email_local": "ada", "first_name": "Ada",
              "last_name": "Lovelace"},
    "whatsapp": {"contact_type": "whatsapp", "user_whatsapp_number": "+14155550100"},
}


class Queue:
    """The publisher: remembers what would have been enqueued."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def provision(self, contact_id: str, *, queue: str) -> None:
        self.sent.append(contact_id)


def test_any_interleaving_leaves_the_ledger_balanced(db, make_settings, make_tenant):
    app_settings = make_settings()
    cost = {
        "phone": int(app_settings.setup_cost_phone * 100),
        "email": int(app_settings.setup_cost_email * 100),
        "whatsapp": int(app_settings.setup_cost_whatsapp * 100),
    }

    class Ledger(RuleBasedStateMachine):
        contacts = Bundle("contacts")

        def __init__(self) -> None:
            super().__init__()
            self.tenant = make_tenant(credits_cents=START_CENTS, assistants=2)
            self.queue = Queue()
            self.service = ContactService(db, app_settings, self.queue)
            self.status: dict[str, str] = {}  # the model: contact id -> status
            self.kind: dict[str, tuple[int, str]] = {}  # contact id -> (assistant, type)
            self.captures: Counter[str] = Counter()

        # --- the model's view ---------------------------------------------------------------

        def live(self, assistant: int, contact_type: str) -> bool:
            return any(
                self.kind[c] == (assistant, contact_type) and s != "failed"
                for c, s in self.status.items()
            )

        def spent(self) -> int:
            return sum(cost[self.kind[c][1]] for c, s in self.status.items() if s == "active")

        def held(self) -> int:
            return sum(
                cost[self.kind[c][1]]
                for c, s in self.status.items()
                if s in ("pending", "provisioning")
            )

        def available(self) -> int:
            return START_CENTS - self.spent() - self.held()

        # --- what users, workers and operators do --------------------------------------------

        @rule(target=contacts, assistant=st.integers(0, 1), kind=st.sampled_from(sorted(BODIES)))
        def submit(self, assistant, kind):
            assistant_id = self.tenant.assistant_ids[assistant]
            body = orjson.dumps(BODIES[kind])
            try:
                reply = self.service.submit(
                    self.tenant.account_id, assistant_id, body,
                    path=f"/v0/assistant/{assistant_id}/contact",
                )
            except ContactExists:
                assert self.live(assistant, kind)
                return None
            except InsufficientCredits:
                assert not self.live(assistant, kind)
                assert self.available() < cost[kind]
                return None
            assert reply.status == 202
            assert not self.live(assistant, kind)
            assert self.available() >= cost[kind]
            contact_id = reply.body["info"]["id"]
            assert self.queue.sent[-1] == contact_id
            self.status[contact_id] = "pending"
            self.kind[contact_id] = (assistant, kind)
            return contact_id

        def _run(self, contact_id, finish):
            """One runner's life: take the lease, finish the contact, commit."""
            now = datetime.now(UTC)
            with db.write() as session:
                lease = pipeline_store.take_lease(session, contact_id, "runner", now, 60)
                if lease is None:
                    return False
                return finish(session, lease, now)

        @rule(contact=contacts)
        def activate(self, contact):
            if contact is None:
                return
            done = self._run(
                contact,
                lambda session, lease, now: pipeline_store.activate(
                    session,
                    lease.contact,
                    list(lease.steps.values()),
                    "runner",
                    f"+1555{lease.contact.id[-8:]}",  # an address is live on one contact only
                    now,
                ),
            )
            assert done == (self.status[contact] in ("pending", "provisioning"))
            if done:
                self.status[contact] = "active"

        @rule(contact=contacts)
        def fail(self, contact):
            if contact is None:
                return
            done = self._run(
                contact,
                lambda session, lease, now: pipeline_store.fail(
                    session, lease.contact, list(lease.steps.values()), "runner", now
                ),
            )
            assert done == (self.status[contact] in ("pending", "provisioning"))
            if done:
                self.status[contact] = "failed"

        @rule(contact=contacts, settle=st.sampled_from(["capture", "release"]))
        def redelivered_settlement(self, contact, settle):
            """A worker that lost track runs a settlement again: it must change nothing."""
            if contact is None or self.status[contact] not in ("active", "failed"):
                return
            with db.write() as session:
                row = session.get(Contact, contact)
                assert getattr(credits, settle)(session, row) is False

        @rule(contact=contacts)
        def operator_retry(self, contact):
            if contact is None:
                return
            assistant, kind = self.kind[contact]
            try:
                retry_contact(db, app_settings, self.queue, contact)
            except NotFound:
                assert self.status[contact] != "failed"
                return
            except InsufficientCredits:
                assert self.available() < cost[kind]
                return
            except ContactExists:
                assert self.live(assistant, kind)
                return
            assert self.status[contact] == "failed"
            assert self.available() >= cost[kind] and not self.live(assistant, kind)
            self.status[contact] = "pending"

        # --- what must hold after every step ------------------------------------------------

        @invariant()
        def account_matches_the_model(self):
            with db.read() as session:
                account = session.get(Account, self.tenant.account_id)
                assert account.balance_cents == START_CENTS - self.spent()
                assert account.reserved_cents == self.held()
                assert account.balance_cents - account.reserved_cents >= 0

        @invariant()
        def ledger_sums_to_the_account(self):
            with db.read() as session:
                sums = dict(
                    session.execute(
                        select(LedgerEntry.kind, func.sum(LedgerEntry.amount_cents))
                        .where(LedgerEntry.account_id == self.tenant.account_id)
                        .group_by(LedgerEntry.kind)
                    ).all()
                )
                account = session.get(Account, self.tenant.account_id)
            assert sums.get("topup", 0) - sums.get("capture", 0) == account.balance_cents
            assert (
                sums.get("reserve", 0) - sums.get("capture", 0) - sums.get("release", 0)
                == account.reserved_cents
            )

        @invariant()
        def one_charge_per_active_contact_none_otherwise(self):
            with db.read() as session:
                rows = session.execute(
                    select(Contact.id, Contact.status, Contact.charged).where(
                        Contact.account_id == self.tenant.account_id
                    )
                ).all()
                charges = Counter(
                    session.execute(
                        select(LedgerEntry.contact_id).where(
                            LedgerEntry.account_id == self.tenant.account_id,
                            LedgerEntry.kind == "capture",
                        )
                    ).scalars()
                )
            assert {r.id: r.status for r in rows} == self.status
            for row in rows:
                # A contact retried after failing may be charged on a later reservation only.
                assert charges[row.id] == (1 if row.status == "active" else 0)
                assert row.charged == (row.status == "active")

    run_state_machine_as_test(
        Ledger,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
