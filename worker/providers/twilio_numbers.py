"""Twilio phone numbers (REST API 2010-04-01): search, buy, find by tag, forward calls, release;
and the idempotent `ensure_number` / `release_tagged` steps built on them.

A number we buy carries our tag (the contact id) as its `FriendlyName`, so a retried step finds
the number an earlier attempt bought (even one whose response was lost) instead of buying a
second one.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from worker.domain.regulatory import NUMBER_LIST, NUMBER_TYPES
from worker.providers._twilio import TwilioClient, require, rfc2822
from worker.providers.errors import (
    NO_NUMBERS_AVAILABLE,
    NUMBER_UNAVAILABLE,
    NoSuchNumberList,
    NotFound,
    Permanent,
    Retryable,
)
from worker.providers.http import timeout_from_settings
from worker.settings import Settings

USER_PHONE_PLACEHOLDER = "{user_phone}"
# Our number type of each AvailablePhoneNumbers list (`Mobile` -> `mobile`), for messages.
_TYPE_OF_LIST = {number_list: kind for kind, number_list in NUMBER_LIST.items()}
_PAGE_SIZE = 100
_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class IncomingNumber:
    """A phone number on our Twilio account."""

    sid: str
    phone_number: str
    friendly_name: str
    voice_url: str | None
    date_created: datetime | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AvailableNumber:
    """A number offered by an AvailablePhoneNumbers list, with its address requirement."""

    phone_number: str
    address_requirements: str = "none"


@dataclass(frozen=True)
class Address:
    """An Address resource of our account, as far as the regulatory rules read it."""

    sid: str
    iso_country: str
    validated: bool


@dataclass(frozen=True)
class Documents:
    """What a purchase sends: the bundle and address SIDs (None: not sent)."""

    bundle_sid: str | None = None
    address_sid: str | None = None

    def form(self) -> dict[str, str]:
        sids = (("BundleSid", self.bundle_sid), ("AddressSid", self.address_sid))
        return {name: value for name, value in sids if value}


def forward_voice_url(template: str, user_phone: str | None) -> str | None:
    """The VoiceUrl that forwards calls to `user_phone`: a TwiML URL answering
    `<Dial>user_phone</Dial>` (by default Twilio's Forward twimlet), with `{user_phone}`
    replaced URL-encoded. None, meaning no VoiceUrl, when there is no number to forward to."""
    if not user_phone:
        return None
    return template.replace(USER_PHONE_PLACEHOLDER, quote(user_phone, safe=""))


class TwilioNumbers(TwilioClient):
    """Client of `/2010-04-01/Accounts/{sid}/` phone-number resources."""

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
        search_size: int = 30,
        max_buy_attempts: int = 8,
        rng: random.Random | None = None,
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
        self.search_size = search_size
        self.max_buy_attempts = max_buy_attempts
        self._rng = rng or random.SystemRandom()
        self._account = f"/2010-04-01/Accounts/{quote(account_sid, safe='')}"

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioNumbers:
        """A client for the Twilio account and base URL that `settings` name."""
        return cls(
            base_url=settings.twilio_api_url,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            timeout=timeout_from_settings(settings),
            max_connections=settings.provider_max_connections,
            api_key_sid=settings.twilio_api_key_sid or None,
        )

    # Operations -------------------------------------------------------------------------

    def search_available(self, country: str, limit: int = 30) -> list[str]:
        """E.164 Local numbers available to buy in `country` (ISO 3166-1 alpha-2); a
        `NotFound` when Twilio has no numbers there."""
        return [n.phone_number for n in self._listing(country, "Local", limit)]

    def search(self, country: str, number_list: str, limit: int = 30) -> list[AvailableNumber]:
        """Numbers of one AvailablePhoneNumbers list (`Local`, `Mobile`, `National`,
        `TollFree`) of `country`, at most `limit`, each with its address requirement.
        `NoSuchNumberList` (a `NotFound`) when Twilio answers 404: no such list there."""
        try:
            return self._listing(country, number_list, limit)
        except NotFound as exc:
            kind = _TYPE_OF_LIST.get(number_list, number_list)
            raise NoSuchNumberList(
                "twilio", f"Twilio has no {kind} numbers in {country}", exc.status
            ) from exc

    def _listing(self, country: str, number_list: str, limit: int) -> list[AvailableNumber]:
        body = self._request_json(
            "GET",
            f"{self._account}/AvailablePhoneNumbers/{quote(country.upper(), safe='')}/"
            f"{quote(number_list, safe='')}.json",
            params={"PageSize": limit},
        )
        listed = [n for n in body.get("available_phone_numbers") or [] if isinstance(n, dict)]
        return [
            AvailableNumber(str(n["phone_number"]), str(n.get("address_requirements") or "none"))
            for n in listed
            if n.get("phone_number")
        ][:limit]

    def number_types(self, country: str) -> tuple[str, ...]:
        """The number lists `country` has, as Twilio's AvailablePhoneNumberCountry resource
        names them under `subresource_uris` (local, mobile, national, toll_free; Twilio's
        other lists, such as voip or shared_cost, are left out); () when Twilio sells no
        numbers there (its 404)."""
        try:
            body = self._request_json(
                "GET",
                f"{self._account}/AvailablePhoneNumbers/{quote(country.upper(), safe='')}.json",
            )
        except NotFound:
            return ()
        lists = body.get("subresource_uris") or {}
        return tuple(t for t in NUMBER_TYPES if isinstance(lists, dict) and lists.get(t))

    def fetch_address(self, sid: str) -> Address:
        """One of our Address resources (NotFound when there is none with that SID)."""
        body = self._request_json("GET", f"{self._account}/Addresses/{quote(sid, safe='')}.json")
        return Address(
            sid=require(body, "sid"),
            iso_country=str(body.get("iso_country") or "").upper(),
            validated=body.get("validated") is not False,
        )

    def buy(
        self,
        phone_number: str,
        friendly_name: str,
        voice_url: str | None = None,
        documents: Documents | None = None,
    ) -> IncomingNumber:
        """Provision `phone_number` on our account, named `friendly_name`, with the
        regulatory `documents` its country and type need."""
        form = {"PhoneNumber": phone_number, "FriendlyName": friendly_name}
        if voice_url:
            form["VoiceUrl"] = voice_url
        if documents is not None:
            form.update(documents.form())
        body = self._request_json("POST", f"{self._account}/IncomingPhoneNumbers.json", data=form)
        return _parse_number(body)

    def find(
        self, friendly_name: str | None = None, phone_number: str | None = None
    ) -> list[IncomingNumber]:
        """Our numbers whose FriendlyName and/or PhoneNumber equal the given values (every page)."""
        params: dict[str, str | int] = {"PageSize": _PAGE_SIZE}
        if friendly_name is not None:
            params["FriendlyName"] = friendly_name
        if phone_number is not None:
            params["PhoneNumber"] = phone_number
        numbers: list[IncomingNumber] = []
        for body in self._pages(
            f"{self._account}/IncomingPhoneNumbers.json", params, _next_page_uri
        ):
            numbers.extend(_parse_number(n) for n in body.get("incoming_phone_numbers") or [] if n)
        # Twilio matches PhoneNumber by pattern; we want exact matches only.
        return [
            n
            for n in numbers
            if (friendly_name is None or n.friendly_name == friendly_name)
            and (phone_number is None or n.phone_number == phone_number)
        ]

    def update_voice_url(self, sid: str, url: str | None) -> IncomingNumber:
        """Set (or, with None, clear) the number's VoiceUrl."""
        body = self._request_json("POST", self._number_path(sid), data={"VoiceUrl": url or ""})
        return _parse_number(body)

    def release(self, sid: str) -> None:
        """Release the number back to Twilio (NotFound if it is not ours any more)."""
        self._request("DELETE", self._number_path(sid))

    # Idempotent steps -------------------------------------------------------------------

    def ensure_number(
        self,
        tag: str,
        country: str,
        voice_url: str | None = None,
        *,
        candidates: list[str] | None = None,
        look_up: bool = True,
        documents: Documents | None = None,
        search: Callable[[], list[str]] | None = None,
    ) -> IncomingNumber:
        """The number tagged `tag`, bought in `country` if we have none yet; its VoiceUrl set
        to `voice_url` (None: no forwarding). Safe to repeat after any failure.

        `candidates` (from an earlier search) are tried before searching again.
        `look_up=False` skips the look-up by tag: only for a first attempt, when no earlier
        purchase request can have been sent for this tag. `documents`: the bundle and address
        the purchase sends; `search`: where more candidates come from (default: the country's
        Local list).
        """
        existing = self._tagged(tag) if look_up else None
        if existing is not None:
            if (existing.voice_url or None) != (voice_url or None):
                existing = self.update_voice_url(existing.sid, voice_url)
            return existing
        return self._buy_one(tag, country, voice_url, list(candidates or []), documents, search)

    def release_tagged(self, tag: str) -> int:
        """Release every number tagged `tag`; how many are gone now (already gone counts)."""
        released = 0
        for number in self.find(friendly_name=tag):
            with contextlib.suppress(NotFound):
                self.release(number.sid)
            released += 1
        return released

    # Internals --------------------------------------------------------------------------

    def _tagged(self, tag: str) -> IncomingNumber | None:
        numbers = self.find(friendly_name=tag)
        if not numbers:
            return None
        # Two attempts racing for one tag could both have bought; every racer keeps the same
        # (oldest) number and releases the rest, so one contact never holds two numbers.
        numbers.sort(key=lambda n: (n.date_created or _OLDEST, n.sid))
        keep, extras = numbers[0], numbers[1:]
        for extra in extras:
            with contextlib.suppress(NotFound):
                self.release(extra.sid)
        return keep

    def _buy_one(
        self,
        tag: str,
        country: str,
        voice_url: str | None,
        candidates: list[str],
        documents: Documents | None = None,
        search: Callable[[], list[str]] | None = None,
    ) -> IncomingNumber:
        for _ in range(self.max_buy_attempts):
            if not candidates:
                candidates = self._candidates(country) if search is None else search()
            try:
                return self.buy(candidates.pop(), tag, voice_url, documents)
            except Permanent as exc:
                # Someone else bought it between our search and our purchase: take the next.
                if exc.code != NUMBER_UNAVAILABLE:
                    raise
        raise Retryable(
            "twilio",
            NUMBER_UNAVAILABLE,
            f"{self.max_buy_attempts} candidate numbers were sold before we could buy one",
        )

    def _candidates(self, country: str) -> list[str]:
        try:
            found = self.search_available(country, self.search_size)
        except NotFound as exc:  # Twilio answers 404 for a country it has no numbers in
            raise Permanent(
                "twilio", NO_NUMBERS_AVAILABLE, f"no numbers available in {country}", exc.status
            ) from exc
        if not found:
            raise Permanent("twilio", NO_NUMBERS_AVAILABLE, f"no numbers available in {country}")
        # Concurrent searches see the same list; shuffling keeps buyers from all reaching
        # for its first entry.
        self._rng.shuffle(found)
        return found

    def _number_path(self, sid: str) -> str:
        return f"{self._account}/IncomingPhoneNumbers/{quote(sid, safe='')}.json"


def _next_page_uri(body: dict[str, Any]) -> str | None:
    # A path on the same host that already carries the filters and a PageToken.
    uri = body.get("next_page_uri")
    return uri if isinstance(uri, str) and uri else None


def _parse_number(body: dict[str, Any]) -> IncomingNumber:
    return IncomingNumber(
        sid=require(body, "sid"),
        phone_number=require(body, "phone_number"),
        friendly_name=str(body.get("friendly_name") or ""),
        voice_url=body.get("voice_url") or None,
        date_created=rfc2822(body.get("date_created")),
    )
