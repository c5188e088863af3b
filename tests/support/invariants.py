"""The contract's "what must never happen", checked against the database and the sandbox."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from worker.domain.billing import month_of, months_owed
from worker.domain.whatsapp_pool import is_shared, pool_tag
from worker.store.models import (
    Account,
    Contact,
    Event,
    LedgerEntry,
    PoolRoute,
    PoolSender,
    WebhookDelivery,
)


def check_invariants(
    db, sandbox, *, expect_terminal: bool = True, foreign_tags: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Assert every invariant; return the count of contacts per status.

    `foreign_tags`: tags of resources made by someone else (not ours to own or delete).
    """
    with db.read() as session:
        contacts = session.execute(select(Contact)).scalars().all()
        ledger = session.execute(select(LedgerEntry)).scalars().all()
        events = session.execute(select(Event)).scalars().all()
        accounts = session.execute(select(Account)).scalars().all()
        deliveries = session.execute(select(WebhookDelivery)).scalars().all()
        pool = {p.id: p for p in session.execute(select(PoolSender)).scalars()}
        routes = {r.contact_id: r for r in session.execute(select(PoolRoute)).scalars()}
    resources = sandbox.resources()
    tags = Counter()
    for kind in ("phone_numbers", "users", "senders"):
        for item in resources[kind]:
            tags[(kind, item["tag"])] += 1
    by_status = Counter(c.status for c in contacts)
    if expect_terminal:
        assert set(by_status) <= {"active", "grace_period", "failed", "deleted"}, by_status

    captures = Counter(e.contact_id for e in ledger if e.kind == "capture")
    releases = Counter(e.contact_id for e in ledger if e.kind == "release")
    fees = Counter((e.contact_id, e.month) for e in ledger if e.kind == "monthly_fee")
    assert all(n == 1 for n in fees.values()), "a month charged twice"
    fee_months: dict[str, list[str]] = {}
    for contact_id, month in fees:
        fee_months.setdefault(contact_id, []).append(month)
    activated = {e.contact_id: month_of(e.created_at) for e in ledger if e.kind == "capture"}
    contact_events = Counter((e.contact_id, e.type) for e in events)
    for c in contacts:
        numbers = tags[("phone_numbers", c.id)]
        users = tags[("users", c.id)]
        senders = tags[("senders", c.id)]
        months = fee_months.get(c.id, [])
        if c.status in ("active", "grace_period", "failed", "deleted"):
            # Only a clean-up under way (failing or deleting) is ever stuck: its end clears it.
            assert c.stuck_since is None and c.stuck_reason is None, (c.id, "stuck", c.status)
        if c.status == "active" and (c.request or {}).get("provisioned_by") == "user":
            # An address the customer brought: nothing at the providers, nothing charged.
            assert (numbers, users, senders) == (0, 0, 0), (c.id, "brought address")
            assert captures[c.id] == 0 and c.setup_cost_cents == 0, c.id
            assert c.address, c.id
        elif c.status in ("active", "grace_period") and shared(c):
            # On a pool sender: nothing at the providers of its own; a route to it, online.
            assert (numbers, users, senders) == (0, 0, 0), (c.id, "a pool contact's own")
            route = routes.get(c.id)
            assert route is not None and route.pool_sender_id == c.pool_sender_id, (c.id, route)
            sender = pool[route.pool_sender_id]
            assert sender.status == "online" and c.address == sender.phone_number, c.id
            assert route.user_whatsapp_number == c.request.get("user_whatsapp_number"), c.id
            assert captures[c.id] == 1 and c.charged, c.id
            assert contact_events[(c.id, "contact.active")] >= 1, c.id
            assert all(m <= c.billed_through for m in months), (c.id, months)
        elif c.status in ("active", "grace_period"):
            expected = {"phone": (1, 0, 0), "email": (0, 1, 0), "whatsapp": (1, 0, 1)}
            assert (numbers, users, senders) == expected[c.contact_type], (c.id, c.contact_type)
            assert captures[c.id] == 1 and c.charged, c.id
            assert c.address, c.id
            assert contact_events[(c.id, "contact.active")] >= 1, c.id
            assert all(m <= c.billed_through for m in months), (c.id, months)
        elif c.status == "deleted":
            assert (numbers, users, senders) == (0, 0, 0), (c.id, "left resources behind")
            assert c.id not in routes, (c.id, "a deleted contact's route is left")
            assert contact_events[(c.id, "contact.deleted")] == 1, c.id
            assert c.deleted_at is not None and c.deleted_reason, c.id
            last = f"{c.deleted_at.year:04d}-{c.deleted_at.month:02d}"
            assert all(m <= last for m in months), (c.id, "charged after deletion", months)
            if c.deleted_reason == "cancelled":
                assert captures[c.id] == 0 and not c.charged and not months, c.id
                assert releases[c.id] == c.reservation_seq, c.id
            else:
                assert captures[c.id] == 1 and c.charged, c.id
        elif c.status == "failed":
            assert (numbers, users, senders) == (0, 0, 0), (c.id, "left resources behind")
            assert c.id not in routes, (c.id, "a failed contact's route is left")
            assert captures[c.id] == 0 and not c.charged and not months, c.id
            assert releases[c.id] == c.reservation_seq, c.id
            assert c.error_code, c.id
            assert contact_events[(c.id, "contact.failed")] >= 1, c.id
        # The ledger equals the model: one fee for every month from activation through the
        # last month paid, none missing and none after (a zero fee writes no row).
        if c.charged and c.monthly_cost_cents:
            expected_months = []
            if c.billed_through and c.billed_through >= activated[c.id]:
                expected_months = [activated[c.id], *months_owed(activated[c.id], c.billed_through)]
            assert sorted(months) == expected_months, (c.id, months, expected_months)
    # The shared pool: an online sender holds exactly its number and its sender, a failed one
    # nothing; a route belongs to a contact of ours on a sender that is not failed.
    by_id = {c.id: c for c in contacts}
    for sender in pool.values():
        held = (tags[("phone_numbers", pool_tag(sender.id))], tags[("senders", pool_tag(sender.id))])
        if sender.status == "online":
            assert held == (1, 1), (sender.id, "online pool sender", held)
        elif sender.status == "failed" and expect_terminal:
            assert held == (0, 0), (sender.id, "failed pool sender left", held)
    for contact_id, route in routes.items():
        assert contact_id in by_id and shared(by_id[contact_id]), (contact_id, "stray route")
        assert pool[route.pool_sender_id].status != "failed" or not expect_terminal, contact_id
    # Nothing at the providers belongs to no contact of ours (or to no pool sender).
    ours = {c.id for c in contacts} | {pool_tag(i) for i in pool}
    strays = [t for (_, t), n in tags.items() if t not in ours and t not in foreign_tags]
    assert not strays, strays
    # Ledger rows, events and deliveries carry account_id without a foreign key (models.py,
    # HOT_ACCOUNT_ROW): each names an account that exists, and the contact's own.
    account_of = {c.id: c.account_id for c in contacts}
    account_ids = {a.id for a in accounts}
    for row in [*ledger, *events]:
        assert row.account_id in account_ids, (row.id, row.account_id)
        if row.contact_id in account_of:
            assert row.account_id == account_of[row.contact_id], (row.id, "another account")
    event_account = {e.id: e.account_id for e in events}
    for d in deliveries:
        assert d.account_id == event_account[d.event_id], (d.id, "not its event's account")
    for account in accounts:
        assert account.balance_cents - account.reserved_cents >= 0
        topups = sum(e.amount_cents for e in ledger if e.kind == "topup" and e.account_id == account.id)
        charged = sum(
            e.amount_cents
            for e in ledger
            if e.kind in ("capture", "monthly_fee") and e.account_id == account.id
        )
        assert account.balance_cents == topups - charged
        if expect_terminal:
            assert account.reserved_cents == 0
    return dict(by_status)


def shared(contact: Contact) -> bool:
    """A WhatsApp contact on the shared pool of senders."""
    return contact.contact_type == "whatsapp" and is_shared(contact.request)
