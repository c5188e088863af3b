"""The sweep: each contact that ended (failed, deleted) or went active has its tag listed at
the providers once more, and what it should not hold is released.

Every creating request is made under a confirmed lease and looks up by tag when it is not
provably the first, but a runner can still freeze after sending a request, and another
runner that takes over meanwhile creates its own: two numbers with one tag. Nothing else
would ever find the second on a contact that is finished. So, `PROVISIONER_SWEEP_AFTER_S`
after a contact reaches one of those statuses, beat's sweep lists its tag: a failed or
deleted contact should hold nothing, an active one only the number (or user) its journal
names. What is released is counted (`provisioner_sweep_released{resource}`) and logged: each
is a resource a frozen runner left behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from worker.domain.contacts import ContactStatus, ContactType, StepStatus
from worker.domain.validation import is_brought
from worker.domain.whatsapp_pool import is_shared
from worker.metrics import sweep_released
from worker.providers import NotFound, ProviderError, Providers
from worker.providers.microsoft_graph import MicrosoftGraph
from worker.runtime.connections import EmailTargets
from worker.runtime.steps import StepContext
from worker.settings import Settings
from worker.store import sweep as store
from worker.store.db import Database
from worker.store.models import Contact, ContactStep

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Sweeper:
    def __init__(
        self,
        db: Database,
        providers: Providers,
        settings: Settings,
        targets: EmailTargets | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db, self.providers, self.settings = db, providers, settings
        self.targets, self.clock = targets, clock
        self.owner = f"sweep:{socket.gethostname()}:{os.getpid()}"

    def run(self) -> dict[str, int]:
        """One pass: the contacts due now, each listed and swept; what was released, by
        resource (`numbers`, `senders`, `users`) and `contacts` swept."""
        settings = self.settings
        now = self.clock()
        with self.db.read() as session:
            due = store.due(session, now, settings.sweep_after_s, settings.sweep_batch)
        totals: Counter[str] = Counter()
        for contact, steps in due:
            owner = None
            if contact.status == ContactStatus.FAILED.value:
                owner = self.owner
                with self.db.write() as session:
                    if not store.claim(session, contact, owner, now, settings.lease_s):
                        continue  # reopened meanwhile, or another pass has it
            try:
                released = self.sweep(contact, steps)
            except ProviderError as exc:
                log.warning("sweep_retry", contact_id=contact.id, error_code=exc.code)
                if owner is not None:
                    with self.db.write() as session:
                        store.let_go(session, contact, owner)
                continue
            with self.db.write() as session:
                store.mark_swept(session, contact, owner)
            totals["contacts"] += 1
            for resource, count in released.items():
                if count:
                    totals[resource] += count
                    sweep_released(resource, count)
            if any(released.values()):
                log.warning(
                    "sweep_released", contact_id=contact.id, status=contact.status, **released
                )
        return dict(totals)

    def sweep(self, contact: Contact, steps: dict[str, ContactStep]) -> dict[str, int]:
        """List the contact's tag and release what it should not hold: everything, if it
        failed or was deleted; what its journal does not name, if it is active."""
        active = contact.status == ContactStatus.ACTIVE.value
        kind = ContactType(contact.contact_type)
        released = {"numbers": 0, "senders": 0, "users": 0}
        if kind is ContactType.WHATSAPP and is_shared(contact.request):
            pass  # on a pool sender: nothing at the providers carries its tag
        elif kind in (ContactType.PHONE, ContactType.WHATSAPP):
            keep = _journaled(steps, "buy_number") if active else set()
            for number in self.providers.numbers.find(friendly_name=contact.id):
                if number.sid in keep:
                    continue
                if kind == ContactType.WHATSAPP:  # its sender first, as a release does
                    released["senders"] += self.providers.senders.delete_for_number(
                        number.phone_number
                    )
                with contextlib.suppress(NotFound):
                    self.providers.numbers.release(number.sid)
                released["numbers"] += 1
        elif not active and not is_brought(contact.request):
            # An address is unique at the provider: an active contact cannot hold two users.
            ctx = StepContext(
                contact, steps, self.providers, self.settings, self.clock(), self.targets
            )
            target = ctx.target()
            address = contact.address or ctx.email()
            if isinstance(target.client, MicrosoftGraph):
                released["users"] = target.client.delete_tagged(contact.id, address)
            else:
                released["users"] = int(target.client.delete_tagged(address, contact.id))
        return released


def _journaled(steps: dict[str, ContactStep], name: str) -> set[str]:
    step = steps.get(name)
    if step is None or step.status != StepStatus.DONE.value or step.provider_id is None:
        return set()
    return {step.provider_id}
