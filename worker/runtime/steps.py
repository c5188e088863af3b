"""The provider steps of each contact type, and the compensation that undoes them.

Each step is idempotent by itself: it looks up what an earlier attempt may have made (by the
contact id we tag every resource with) before it creates. A step may skip the look-up only on
its very first attempt, when the journal proves no earlier request can have been sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.domain.contacts import ContactType, StepStatus, deprovision_plan
from worker.domain.regulatory import LOCAL, NUMBER_LIST
from worker.domain.validation import is_brought
from worker.domain.whatsapp_pool import (
    POOL_EXHAUSTED,
    POOL_TIMEOUT,
    PoolSenderStatus,
    is_shared,
    poll_delay,
    pool_tag,
)
from worker.providers import (
    AUTH_FAILED,
    SENDER_REJECTED,
    NotFound,
    Permanent,
    Providers,
    Retryable,
    forward_voice_url,
    is_failed,
    is_online,
)
from worker.providers.microsoft_graph import GraphUser, MicrosoftGraph
from worker.providers.twilio_numbers import Documents
from worker.providers.twilio_senders import PENDING_VERIFICATION, TWILIO_REVIEW
from worker.runtime.connections import EmailTarget, EmailTargets
from worker.runtime.number_pool import REQUIREMENTS, NumberPool, PoolKey, Unmet
from worker.runtime.pool import PoolAccess
from worker.settings import Settings
from worker.store.models import Contact, ContactStep, PoolSender

CANDIDATES = 20


@dataclass
class StepResult:
    """A step finished: what it made, and the contact's address if it now knows it."""

    provider_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Wait:
    """Provider-side state is not there yet: look again in `delay_s` (no thread sleeps)."""

    delay_s: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    contact: Contact
    steps: dict[str, ContactStep]
    providers: Providers
    settings: Settings
    now: datetime
    # Email contacts: their account's connection (or the platform's Google).
    targets: EmailTargets | None = None
    # WhatsApp contacts of the shared pool: its routes and senders in the database.
    pool: PoolAccess | None = None
    # Phone and WhatsApp contacts: the shared candidates (None: each contact searches).
    number_pool: NumberPool | None = None
    # The runner's lease on the contact: what its database writes beside the journal (the
    # sender pool's) are fenced by.
    owner: str | None = None
    _target: EmailTarget | None = field(default=None, repr=False)

    def target(self) -> EmailTarget:
        """The email client, domain and settings this contact is provisioned with."""
        if self._target is None:
            if self.targets is None:
                self._target = EmailTarget(
                    "google", self.settings.email_domain, self.providers.directory
                )
            else:
                self._target = self.targets.for_contact(self.contact)
        return self._target

    def lease_owner(self) -> str:
        assert self.owner is not None, "a step that writes under the lease knows its owner"
        return self.owner

    @property
    def tag(self) -> str:
        return self.contact.id

    @property
    def request(self) -> dict[str, Any]:
        return self.contact.request

    def detail(self, step: str) -> dict[str, Any]:
        return self.steps[step].detail or {}

    def email(self) -> str:
        return f"{self.request['email_local']}@{self.target().domain}"


Step = Callable[[StepContext, bool], StepResult | Wait]


def find_number(ctx: StepContext, first: bool) -> StepResult:
    return StepResult(detail={"candidates": _candidates(ctx)})


def _candidates(ctx: StepContext) -> list[str]:
    """Numbers of the request's list (Local, Mobile, National, TollFree) whose address
    requirement the contact's documents meet: one from the shared pool, or (without one)
    those of the contact's own search; Permanent when there are none."""
    country = ctx.request.get("phone_country") or "US"
    kind = ctx.request.get("phone_number_type") or LOCAL
    numbers = ctx.providers.numbers
    if ctx.number_pool is not None:
        acceptable = [r for r in REQUIREMENTS if _meets(ctx, country, r)]
        key = PoolKey(numbers.connection, country, NUMBER_LIST[kind])
        size = ctx.number_pool.search_size
        try:
            taken = ctx.number_pool.take(
                key, acceptable, lambda: numbers.search(country, NUMBER_LIST[kind], size)
            )
        except Unmet as exc:
            raise _none_fit(country, kind, exc.requirements) from None
        if taken is not None:
            return [taken]
    found = numbers.search(country, NUMBER_LIST[kind], CANDIDATES)
    fit = [n.phone_number for n in found if _meets(ctx, country, n.address_requirements)]
    if not fit:
        raise _none_fit(country, kind, [n.address_requirements for n in found])
    return fit


def _none_fit(country: str, kind: str, offered: list[str]) -> Permanent:
    if not offered:
        return Permanent("twilio", "no_numbers_available", f"no numbers available in {country}")
    return Permanent(
        "twilio",
        "no_numbers_available",
        f"every {country} {kind} number offered needs an address "
        f"({', '.join(sorted(set(offered)))}) that the contact's documents do not meet",
    )


def _meets(ctx: StepContext, country: str, requirement: str) -> bool:
    """Whether the contact's address meets a number's `address_requirements` (an address
    whose country is not known is left to Twilio to judge)."""
    if requirement == "none":
        return True
    if not ctx.request.get("address_sid"):
        return False
    where = ctx.request.get("address_country")
    if requirement == "any" or not where:
        return True
    return (where == country) == (requirement == "local")


def buy_number(ctx: StepContext, first: bool) -> StepResult:
    voice_url = None
    if ctx.contact.contact_type == ContactType.PHONE:
        voice_url = forward_voice_url(ctx.settings.voice_forward_url, ctx.request.get("user_phone"))
    documents = Documents(ctx.request.get("bundle_sid"), ctx.request.get("address_sid"))
    number = ctx.providers.numbers.ensure_number(
        ctx.tag,
        ctx.request.get("phone_country") or "US",
        voice_url,
        candidates=ctx.detail("find_number").get("candidates"),
        look_up=not first,
        documents=documents,
        search=lambda: _candidates(ctx),
    )
    return StepResult(number.sid, {"phone_number": number.phone_number})


def create_sender(ctx: StepContext, first: bool) -> StepResult:
    """Register the number as a WhatsApp sender under the account's own WABA, or else the
    platform's (`PROVISIONER_TWILIO_WABA_ID`)."""
    number = ctx.detail("buy_number")["phone_number"]
    own = ctx.targets.whatsapp_waba(ctx.contact.account_id) if ctx.targets is not None else None
    sender = ctx.providers.senders.ensure_sender(number, waba_id=own, look_up=not first)
    waba_id = own or ctx.providers.senders.default_waba_id
    detail = {"sender_id": sender.sender_id, "status": sender.status}
    if waba_id is not None:
        detail["waba_id"] = waba_id
    return StepResult(sender.sid, detail)


# A verification SMS dated a little before the contact started still counts (clock skew).
_CODE_SKEW = timedelta(minutes=2)


def await_sender_online(ctx: StepContext, first: bool) -> StepResult | Wait:
    """Follow the sender's status to ONLINE: submit the verification code our number
    receives (PENDING_VERIFICATION), wait out Twilio's review with a backoff up to its bound
    (TWILIO_REVIEW), fail with the provider's reasons (OFFLINE). Each look is one poll; the
    wait between polls is the pipeline's (a due time and a countdown), never a sleep."""
    sid = ctx.steps["create_sender"].provider_id
    assert sid is not None, "create_sender is done before this step runs"
    return _follow_sender(ctx, sid, ctx.detail("await_sender_online"))


def _follow_sender(ctx: StepContext, sid: str, previous: dict[str, Any]) -> StepResult | Wait:
    """One look at the sender `sid`: done when online, else what to wait for (`previous`:
    the detail of the last look)."""
    since = previous.get("since") or ctx.now.isoformat()
    kept = ("review_since", "review_polls", "code_tried", "backoff")
    keep = {k: previous[k] for k in kept if k in previous}
    sender = ctx.providers.senders.fetch(sid)
    detail: dict[str, Any] = {"status": sender.status, "since": since, **keep}
    if is_online(sender):
        return StepResult(sid, detail)
    if is_failed(sender):
        reasons = "; ".join(sender.offline_reasons) or sender.status
        raise Permanent("twilio", SENDER_REJECTED, f"WhatsApp sender went {reasons}")
    settings = ctx.settings
    if sender.status == TWILIO_REVIEW:
        review_since = previous.get("review_since") or ctx.now.isoformat()
        reviewed = (ctx.now - datetime.fromisoformat(review_since)).total_seconds()
        if reviewed > settings.sender_review_timeout_s:
            raise Permanent(
                "twilio", "sender_review_timeout", f"sender in review for {int(reviewed)} s"
            )
        polls = int(previous.get("review_polls", 0))
        delay = min(settings.sender_poll_s * 2 ** min(polls, 20), settings.sender_review_poll_max_s)
        return Wait(delay, {**detail, "review_since": review_since, "review_polls": polls + 1})
    waited = (ctx.now - datetime.fromisoformat(since)).total_seconds()
    if "review_since" not in previous and waited > settings.sender_online_timeout_s:
        raise Permanent(
            "twilio", "sender_timeout", f"sender still {sender.status} after {int(waited)} s"
        )
    if sender.status == PENDING_VERIFICATION:
        return _verify(ctx, sid, sender.phone_number, detail)
    # Still being created (or verified): look again with a growing wait, at the provider's
    # pace rather than ours (each look is a request on the account's limits).
    backoff = int(previous.get("backoff", 0))
    return Wait(_poll_delay(settings, backoff), {**detail, "backoff": backoff + 1})


def _poll_delay(settings: Settings, polls: int) -> float:
    delay = settings.sender_poll_s * 1.5 ** min(polls, 30)
    return round(min(delay, max(settings.sender_poll_max_s, settings.sender_poll_s)), 3)


def _verify(ctx: StepContext, sid: str, number: str, detail: dict[str, Any]) -> Wait:
    """Submit the code Meta sent our number by SMS, once per code; a refused code is not
    tried again (a newer SMS brings the next)."""
    # The number was bought for this contact after it started: an older SMS to it was a
    # previous holder's.
    started = ctx.contact.started_at or datetime.fromisoformat(detail["since"])
    received = ctx.providers.senders.received_code(number, since=started - _CODE_SKEW)
    if received is None:
        return Wait(ctx.settings.sender_poll_s, detail)
    # The journal keeps which SMS was used, never the code (its detail reaches the logs).
    message_sid, code = received
    tried = message_sid or hashlib.sha256(code.encode()).hexdigest()[:8]
    if tried == detail.get("code_tried"):
        return Wait(ctx.settings.sender_poll_s, detail)
    try:
        submitted = ctx.providers.senders.submit_code(sid, code)
    except Permanent as exc:
        if exc.code != SENDER_REJECTED:
            raise
        return Wait(ctx.settings.sender_poll_s, {**detail, "code_tried": tried})
    # A code went in: the sender moves on soon, so the next look is soon again.
    return Wait(
        ctx.settings.sender_poll_s,
        {**detail, "status": submitted.status, "code_tried": tried, "backoff": 0},
    )


def assign_pool_sender(ctx: StepContext, first: bool) -> StepResult | Wait:
    """Route the contact's user to its assistant on a pool sender the user has no other
    assistant on (worker/store/pool.take_route): an online one, else the growing one, else a
    new one this contact grows while the pool has room. The grower buys the number (tagged
    `pool:<id>`) and registers its sender under the platform's WABA, each by look-up before
    create, and follows it online as a dedicated sender is followed; the others wait for it
    in the database. Failing: `whatsapp_pool_exhausted` (every sender holds this user, and
    the pool is full), `whatsapp_pool_timeout` (no sender online within the bound)."""
    assert ctx.pool is not None, "a pool contact's runner has the pool"
    settings = ctx.settings
    previous = ctx.detail("assign_pool_sender")
    since = previous.get("since") or ctx.now.isoformat()
    waited = (ctx.now - datetime.fromisoformat(since)).total_seconds()
    polls = int(previous.get("pool_polls", 0))
    # Past the bound, a contact fails. Past half of it, it grows no new sender (after its
    # first one failed): a sender takes minutes to come online, and one bought and registered
    # for a contact with moments left would be paid for and released unused. It still takes
    # a sender that is online or growing, and otherwise waits out its bound.
    late = waited > settings.whatsapp_pool_wait_s
    may_grow = waited <= settings.whatsapp_pool_wait_s / 2
    user = ctx.request.get("user_whatsapp_number")
    taken = ctx.pool.take(ctx.contact, ctx.lease_owner(), user, ctx.now, may_grow=may_grow)
    sender = taken.sender
    detail: dict[str, Any] = {"since": since}
    if sender is not None:
        detail["pool_sender_id"] = sender.id
        if sender.status == PoolSenderStatus.ONLINE.value:
            return StepResult(
                sender.sender_sid,
                {**detail, "phone_number": sender.phone_number, "status": "ONLINE"},
            )
    elif not taken.wait:
        raise Permanent(
            "twilio",
            POOL_EXHAUSTED,
            f"each of the pool's {settings.whatsapp_pool_max_senders} WhatsApp senders already "
            "routes this user to another assistant",
        )
    if late:
        raise Permanent("twilio", POOL_TIMEOUT, f"no pool sender came online for {int(waited)} s")
    if sender is not None and taken.grows:
        return _grow(ctx, sender, previous, detail)
    delay = poll_delay(polls, settings.sender_poll_s, settings.whatsapp_pool_poll_max_s)
    return Wait(delay, {**detail, "pool_polls": polls + 1})


def _grow(
    ctx: StepContext, sender: PoolSender, previous: dict[str, Any], detail: dict[str, Any]
) -> StepResult | Wait:
    """Make the pool sender this contact grows, and follow it one look."""
    assert ctx.pool is not None
    if sender.phone_number is None:
        tag = pool_tag(sender.id)
        number = ctx.providers.numbers.ensure_number(tag, ctx.settings.whatsapp_pool_country)
        ctx.pool.record_growth(
            ctx.tag,
            ctx.lease_owner(),
            sender.id,
            ctx.now,
            number_sid=number.sid,
            phone_number=number.phone_number,
        )
        # The sender is made on the next run, after the lease is confirmed again (as between
        # a dedicated contact's purchase and its sender: one creating request per look).
        return Wait(0.0, {**detail, "grows": True})
    sid = sender.sender_sid
    if sid is None:
        made = ctx.providers.senders.ensure_sender(sender.phone_number)
        sid = made.sid
        ctx.pool.record_growth(
            ctx.tag,
            ctx.lease_owner(),
            sender.id,
            ctx.now,
            sender_sid=sid,
            waba_id=made.waba_id or None,
        )
    try:
        looked = _follow_sender(ctx, sid, previous)
    except Permanent as exc:
        if exc.code in ("sender_timeout", "sender_review_timeout"):
            raise Permanent("twilio", POOL_TIMEOUT, exc.message) from exc
        raise
    if isinstance(looked, Wait):
        return Wait(looked.delay_s, {**looked.detail, **detail})
    ctx.pool.mark_online(ctx.tag, ctx.lease_owner(), sender.id, ctx.now)
    return StepResult(
        sid, {**looked.detail, **detail, "phone_number": sender.phone_number, "grew": True}
    )


def create_user(ctx: StepContext, first: bool) -> StepResult:
    target = ctx.target()
    if isinstance(target.client, MicrosoftGraph):
        made = target.client.ensure_user(
            ctx.email(),
            ctx.request["first_name"],
            ctx.request["last_name"],
            ctx.tag,
            usage_location=str(target.config.get("usage_location") or "US"),
            look_up=not first,
        )
        return StepResult(made.id, {"email": made.user_principal_name})
    user = target.client.ensure_user(
        ctx.email(),
        ctx.request["first_name"],
        ctx.request["last_name"],
        ctx.tag,
        look_up=not first,
    )
    return StepResult(user.id, {"email": user.primary_email})


def assign_license(ctx: StepContext, first: bool) -> StepResult:
    """Microsoft 365: the connection's licence on the user (its mailbox comes with it)."""
    target = ctx.target()
    assert isinstance(target.client, MicrosoftGraph), "a Microsoft step"
    user_id = ctx.steps["create_user"].provider_id
    assert user_id is not None, "create_user is done before this step runs"
    sku = str(target.config.get("license_sku_id") or target.config.get("license_sku"))
    target.client.ensure_license(user_id, sku)
    return StepResult(user_id, {"sku_id": sku})


def confirm_user(ctx: StepContext, first: bool) -> StepResult:
    target = ctx.target()
    try:
        user = target.client.get_user(ctx.email())
    except NotFound as exc:
        # Directory and Graph reads lag their writes; not readable yet is worth a retry.
        raise Retryable(
            target.provider, "not_readable_yet", "created user is not readable yet"
        ) from exc
    if user.tag != ctx.tag:
        raise Permanent(target.provider, "email_taken", "the address belongs to another account")
    address = user.user_principal_name if isinstance(user, GraphUser) else user.primary_email
    return StepResult(user.id, {"email": address})


STEPS: dict[str, Step] = {
    "find_number": find_number,
    "buy_number": buy_number,
    "create_sender": create_sender,
    "await_sender_online": await_sender_online,
    "assign_pool_sender": assign_pool_sender,
    "create_user": create_user,
    "assign_license": assign_license,
    "confirm_user": confirm_user,
}


def address_of(ctx: StepContext) -> str:
    if ctx.contact.contact_type == ContactType.EMAIL:
        return ctx.email()
    if "assign_pool_sender" in ctx.steps:  # a pool sender's number, shared with other users
        return str(ctx.detail("assign_pool_sender")["phone_number"])
    return str(ctx.detail("buy_number")["phone_number"])


# --- releasing what a contact holds -----------------------------------------------------------
# Each finds its resource by the contact's tag, not by the journal (a create whose answer was
# lost is in no journal), and treats one already gone as released; raises ProviderError to
# be run again.


def delete_user(ctx: StepContext) -> None:
    if is_brought(ctx.request):
        return  # the customer's own address: nothing of ours to delete
    address = ctx.contact.address or ctx.email()
    try:
        target = ctx.target()
        if isinstance(target.client, MicrosoftGraph):
            target.client.delete_tagged(ctx.tag, address)
        else:
            target.client.delete_tagged(address, ctx.tag)
    except Permanent as exc:
        if exc.code == AUTH_FAILED and _refused_before_creating(ctx):
            return
        raise


def delete_sender(ctx: StepContext) -> None:
    # Before the number: a released number would leave its sender behind, offline.
    for number in ctx.providers.numbers.find(friendly_name=ctx.tag):
        ctx.providers.senders.delete_for_number(number.phone_number)


def release_number(ctx: StepContext) -> None:
    ctx.providers.numbers.release_tagged(ctx.tag)


def release_pool_route(ctx: StepContext) -> None:
    """A pool contact's release: its route only, never the shared sender or its number; but a
    sender this contact was growing that never came online is its own to undo (marked failed,
    so that the contacts waiting on it take another, and its number and sender released)."""
    assert ctx.pool is not None, "a pool contact's runner has the pool"
    for sender in ctx.pool.grown_by(ctx.tag):
        if sender.status == PoolSenderStatus.GROWING.value:
            ctx.pool.mark_failed(
                ctx.tag, ctx.lease_owner(), sender.id, "the contact growing it ended", ctx.now
            )
        tag = pool_tag(sender.id)
        for number in ctx.providers.numbers.find(friendly_name=tag):
            ctx.providers.senders.delete_for_number(number.phone_number)
        ctx.providers.numbers.release_tagged(tag)
    ctx.pool.release_route(ctx.tag, ctx.lease_owner())


Release = Callable[[StepContext], None]
RELEASES: dict[str, Release] = {
    "delete_user": delete_user,
    "delete_sender": delete_sender,
    "release_number": release_number,
    "release_pool_route": release_pool_route,
}


def compensate(ctx: StepContext) -> None:
    """Delete whatever this contact made at the providers: its release steps, in order.
    Idempotent; raises ProviderError to retry."""
    for name in deprovision_plan(ContactType(ctx.contact.contact_type), ctx.request):
        RELEASES[name](ctx)


def needs_compensation(contact: Contact) -> bool:
    """A pool contact may hold a route (a database row, not a provider request) whatever its
    journal's provider attempts say: its compensation always runs."""
    return contact.contact_type == ContactType.WHATSAPP.value and is_shared(contact.request)


def _refused_before_creating(ctx: StepContext) -> bool:
    """The provider refused our credentials on the one and only attempt to create the user
    (the contact failed with that refusal): nothing can exist to delete. A create attempted
    more than once may have made the user before the credentials stopped working; that
    compensation is retried until they work again."""
    step = ctx.steps.get("create_user")
    return ctx.contact.error_code == AUTH_FAILED and (
        step is None or (step.status != StepStatus.DONE.value and step.attempts <= 1)
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
