"""WhatsApp senders through Twilio's Senders API (`/v2/Channels/Senders`, JSON bodies): create
under a WABA, fetch, find by number, submit a verification code, delete; the idempotent
`ensure_sender` / `delete_for_number` steps; and the verification code Meta sends by SMS to one
of our numbers, read from the REST API's Messages list.

The Senders API has no field for our tag: a sender is ours because the number it registers is
one we bought and tagged, so senders are found by their `sender_id` (`whatsapp:+E164`).
Senders' own refusals (an unusable WABA, a WABA at Meta's sender cap) are classified here,
everything else by the shared Twilio classifier.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from worker.providers._twilio import (
    PROVIDER,
    TwilioClient,
    raise_for_twilio,
    require,
    rfc2822,
)
from worker.providers.errors import (
    CONFLICT,
    WABA_INVALID,
    WABA_SENDER_LIMIT,
    NotFound,
    Permanent,
)
from worker.providers.http import timeout_from_settings
from worker.settings import Settings

SENDERS_PATH = "/v2/Channels/Senders"
WHATSAPP_PREFIX = "whatsapp:"
_PAGE_SIZE = 100
# Must follow Meta's display-name guidelines; a deployment names its business here.
DEFAULT_PROFILE_NAME = "Assistant"

# Sender statuses as Twilio documents them.
CREATING = "CREATING"
ONLINE = "ONLINE"
ONLINE_UPDATING = "ONLINE:UPDATING"
OFFLINE = "OFFLINE"
PENDING_VERIFICATION = "PENDING_VERIFICATION"
VERIFYING = "VERIFYING"
TWILIO_REVIEW = "TWILIO_REVIEW"
DRAFT = "DRAFT"
STUBBED = "STUBBED"

# Can send messages.
ONLINE_STATUSES = frozenset({ONLINE, ONLINE_UPDATING})
# Registration failed or the sender was taken offline (see `offline_reasons`): waiting longer
# will not help.
FAILED_STATUSES = frozenset({OFFLINE})
# Everything else (CREATING, PENDING_VERIFICATION, VERIFYING, TWILIO_REVIEW, DRAFT, STUBBED and
# any status Twilio adds later) is "not yet": wait, within the pipeline's own time limit.

# Twilio error codes of the Senders API that we act on.
WABA_NOT_USABLE = 63101  # "WABA ID provided is not valid or unable to be used"
WABA_AT_CAPACITY = 63104  # the WABA holds as many senders as Meta allows (see docs/providers.md)
# Meta's verification SMS: "Your WhatsApp Business code 123-456 ..." (six digits, maybe split).
_CODE = re.compile(r"\b(\d{3})-?(\d{3})\b")


def raise_for_senders(response: httpx.Response) -> None:
    """The Senders API's own refusals; every other non-2xx goes to `raise_for_twilio`."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    message = str(body.get("message") or "") if isinstance(body, dict) else ""
    status = response.status_code
    if code == WABA_NOT_USABLE:
        raise Permanent(PROVIDER, WABA_INVALID, message, status, provider_code=str(code))
    if code == WABA_AT_CAPACITY:
        raise Permanent(PROVIDER, WABA_SENDER_LIMIT, message, status, provider_code=str(code))
    raise_for_twilio(response)


@dataclass(frozen=True)
class Sender:
    """A WhatsApp sender; `sender_id` is `whatsapp:+E164`."""

    sid: str
    sender_id: str
    status: str
    offline_reasons: tuple[str, ...] = field(default=(), compare=False)
    waba_id: str | None = field(default=None, compare=False)

    @property
    def phone_number(self) -> str:
        """The E.164 number the sender registers."""
        return self.sender_id.removeprefix(WHATSAPP_PREFIX)


def is_online(sender: Sender) -> bool:
    """The sender can send and receive WhatsApp messages."""
    return sender.status in ONLINE_STATUSES


def is_failed(sender: Sender) -> bool:
    """The sender will not come online by waiting."""
    return sender.status in FAILED_STATUSES


def whatsapp_id(phone_number: str) -> str:
    """`whatsapp:+E164` for an E.164 number (accepts one already prefixed)."""
    return WHATSAPP_PREFIX + phone_number.removeprefix(WHATSAPP_PREFIX)


class TwilioSenders(TwilioClient):
    """Client of Twilio's Senders API v2 for the WhatsApp channel. WhatsApp requires a display
    name on every sender: `default_profile_name` is used when a call gives none, and
    `default_waba_id` (the platform's WABA) when a call names no WABA."""

    def __init__(
        self,
        *,
        base_url: str,
        account_sid: str,
        auth_token: SecretStr,
        timeout: httpx.Timeout,
        max_connections: int = 100,
        api_key_sid: str | None = None,
        transport: httpx.BaseTransport | None = None,
        default_profile_name: str = DEFAULT_PROFILE_NAME,
        api_url: str = "https://api.twilio.com",
        default_waba_id: str | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            account_sid=account_sid,
            auth_token=auth_token,
            timeout=timeout,
            max_connections=max_connections,
            api_key_sid=api_key_sid,
            transport=transport,
        )
        self.default_profile_name = default_profile_name
        self.default_waba_id = default_waba_id or None
        self._raise_for_status = raise_for_senders
        # The Messages list is on the REST API's host, not the Senders API's.
        self._messages_url = (
            f"{api_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSenders:
        """A client for the Twilio account and messaging base URL that `settings` name."""
        return cls(
            base_url=settings.twilio_messaging_url,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            timeout=timeout_from_settings(settings),
            max_connections=settings.provider_max_connections,
            api_key_sid=settings.twilio_api_key_sid or None,
            default_profile_name=settings.whatsapp_profile_name,
            api_url=settings.twilio_api_url,
            default_waba_id=settings.twilio_waba_id,
        )

    # Operations -------------------------------------------------------------------------

    def create(
        self,
        phone_number: str,
        profile_name: str | None = None,
        *,
        waba_id: str | None = None,
        verification_method: str | None = None,
        callback_url: str | None = None,
    ) -> Sender:
        """Register `phone_number` as a WhatsApp sender named `profile_name` (default: the
        client's `default_profile_name`); it starts out `CREATING`."""
        body: dict[str, Any] = {"sender_id": whatsapp_id(phone_number)}
        waba_id = waba_id or self.default_waba_id
        configuration = {
            k: v
            for k, v in (("waba_id", waba_id), ("verification_method", verification_method))
            if v is not None
        }
        if configuration:
            body["configuration"] = configuration
        body["profile"] = {"name": profile_name or self.default_profile_name}
        if callback_url is not None:
            body["webhook"] = {"callback_url": callback_url, "callback_method": "POST"}
        return _parse_sender(self._request_json("POST", SENDERS_PATH, json=body))

    def fetch(self, sid: str) -> Sender:
        """The sender `sid` as it is now (NotFound if deleted)."""
        return _parse_sender(self._request_json("GET", self._sender_path(sid)))

    def find_by_number(self, phone_number: str) -> Sender | None:
        """Our WhatsApp sender for `phone_number`, if any."""
        found = self._find_all(phone_number)
        return found[0] if found else None

    def delete(self, sid: str) -> None:
        """Delete the sender (NotFound if it is already gone)."""
        self._request("DELETE", self._sender_path(sid))

    def submit_code(self, sid: str, code: str) -> Sender:
        """Verify the sender's number with the code Meta sent it (an update that sets
        `configuration.verification_code`); a sender in PENDING_VERIFICATION goes VERIFYING."""
        body = {"configuration": {"verification_code": code}}
        return _parse_sender(self._request_json("POST", self._sender_path(sid), json=body))

    def received_code(self, phone_number: str, since: datetime) -> tuple[str, str] | None:
        """The newest WhatsApp verification code our number `phone_number` received by SMS
        since `since`, read from the Messages list (`To` filter): (the message's sid, the
        code), or None."""
        body = self._request_json(
            "GET", self._messages_url, params={"To": phone_number, "PageSize": 20}
        )
        for message in body.get("messages") or []:  # newest first
            if not isinstance(message, dict) or message.get("to") != phone_number:
                continue
            sent = rfc2822(message.get("date_sent") or message.get("date_created"))
            if sent is not None and sent < since:
                continue
            match = _CODE.search(str(message.get("body") or ""))
            if match is not None:
                return str(message.get("sid") or ""), match.group(1) + match.group(2)
        return None

    # Idempotent steps -------------------------------------------------------------------

    def ensure_sender(
        self,
        phone_number: str,
        profile_name: str | None = None,
        *,
        waba_id: str | None = None,
        verification_method: str | None = None,
        callback_url: str | None = None,
        look_up: bool = True,
    ) -> Sender:
        """The sender for `phone_number`, created if there is none yet. Safe to repeat after any
        failure: a sender created by an attempt whose response was lost is adopted.

        `look_up=False` goes straight to the create (a conflict still leads to the look-up).
        """
        existing = self.find_by_number(phone_number) if look_up else None
        if existing is not None:
            return existing
        try:
            return self.create(
                phone_number,
                profile_name,
                waba_id=waba_id,
                verification_method=verification_method,
                callback_url=callback_url,
            )
        except Permanent as exc:
            if exc.code != CONFLICT:
                raise
            # Created meanwhile by a concurrent attempt.
            existing = self.find_by_number(phone_number)
            if existing is None:
                raise
            return existing

    def delete_for_number(self, phone_number: str) -> int:
        """Delete every sender for `phone_number`; how many are gone now (already gone counts)."""
        deleted = 0
        for sender in self._find_all(phone_number):
            with contextlib.suppress(NotFound):
                self.delete(sender.sid)
            deleted += 1
        return deleted

    def senders_on_waba(self, waba_id: str) -> int:
        """How many of our WhatsApp senders are registered under `waba_id` (every page). The
        Senders API has no read of a WABA itself: this is what Twilio can tell us of one."""
        count = 0
        for body in self._pages(
            SENDERS_PATH, {"Channel": "whatsapp", "PageSize": _PAGE_SIZE}, _next_page_url
        ):
            count += sum(
                1 for s in body.get("senders") or [] if s and _parse_sender(s).waba_id == waba_id
            )
        return count

    # Internals --------------------------------------------------------------------------

    def _find_all(self, phone_number: str) -> list[Sender]:
        wanted = whatsapp_id(phone_number)
        found: list[Sender] = []
        for body in self._pages(
            SENDERS_PATH, {"Channel": "whatsapp", "PageSize": _PAGE_SIZE}, _next_page_url
        ):
            found.extend(
                sender
                for sender in (_parse_sender(s) for s in body.get("senders") or [] if s)
                if sender.sender_id == wanted
            )
        return found

    def _sender_path(self, sid: str) -> str:
        return f"{SENDERS_PATH}/{quote(sid, safe='')}"


def _next_page_url(body: dict[str, Any]) -> str | None:
    # Product APIs page with {"meta": {"next_page_url": absolute URL or null, ...}}.
    meta = body.get("meta")
    url = meta.get("next_page_url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) and url else None


def _parse_sender(body: dict[str, Any]) -> Sender:
    reasons = body.get("offline_reasons") or []
    configuration = body.get("configuration")
    waba = configuration.get("waba_id") if isinstance(configuration, dict) else None
    return Sender(
        sid=require(body, "sid"),
        sender_id=require(body, "sender_id"),
        status=str(body.get("status") or ""),
        offline_reasons=tuple(
            str(r.get("message") or r.get("code") or "") for r in reasons if isinstance(r, dict)
        ),
        waba_id=str(waba) if waba else None,
    )
