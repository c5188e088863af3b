"""Twilio's Regulations, cached with a TTL: the refresh pass (beat's `refresh-regulations`)
that fetches from Twilio the country/number-type pairs whose entry is missing, stale or older
than the TTL, and the API's in-memory copy that judges a request by a fresh entry (else by
the built-in table, worker/domain/regulatory.py) without a database query of its own.

Twilio is asked, per country and pass, which number lists the country has (its
AvailablePhoneNumberCountry resource, `AvailablePhoneNumbers/{country}.json`: a type it does
not list is not sold there, and the API refuses it naming `phone_number_type`); then, per
pair it sells, for its Regulations (`numbers.twilio.com/v2/RegulatoryCompliance/
Regulations?IsoCountry=&NumberType=`: a bundle is needed when one is listed for the end-user
type) and for one number of the list (`AvailablePhoneNumbers/{country}/{List}.json?
PageSize=1`: its `address_requirements`, which is where Twilio states the address rule).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from worker.domain.regulatory import (
    END_USER_TYPES,
    NUMBER_LIST,
    NUMBER_TYPES,
    TWILIO_NUMBER_TYPE,
    Rule,
    rule_for,
    rule_from_twilio,
    strictest,
    usable,
)
from worker.providers import NotFound, ProviderError
from worker.providers.twilio_numbers import TwilioNumbers
from worker.providers.twilio_regulatory import TwilioCompliance
from worker.settings import Settings
from worker.store import regulations as store
from worker.store.db import Database
from worker.store.models import TwilioRegulation

log = structlog.get_logger(__name__)

LEASE = "refresh-regulations"


@dataclass(frozen=True)
class Fetched:
    """Twilio's answer for one country and number type: each end-user type's rule, and the
    SID of its Regulation (None where none is listed); `sold` False when the country has no
    such number list (each rule then needs nothing)."""

    rules: dict[str, tuple[Rule, str | None]]
    sold: bool = True


# (country, our number type) -> Twilio's answer; opened once per pass (its clients' pools).
Fetcher = Callable[[str, str], Fetched]
FetcherFactory = Callable[[Settings], AbstractContextManager[Fetcher]]


@contextmanager
def twilio_fetcher(settings: Settings) -> Iterator[Fetcher]:
    with (
        TwilioCompliance.from_settings(settings) as compliance,
        TwilioNumbers.from_settings(settings) as numbers,
    ):
        lists: dict[str, tuple[str, ...]] = {}  # country -> its number types, this pass

        def fetch(country: str, number_type: str) -> Fetched:
            if country not in lists:
                lists[country] = numbers.number_types(country)
            if number_type not in lists[country]:
                return Fetched({e: (Rule(False, "none"), None) for e in END_USER_TYPES}, False)
            listed = compliance.list_regulations(country, TWILIO_NUMBER_TYPE[number_type])
            try:
                offered = numbers.search(country, NUMBER_LIST[number_type], 1)
            except NotFound:  # Twilio has no such list in that country
                offered = []
            requirement = offered[0].address_requirements if offered else None
            rules: dict[str, tuple[Rule, str | None]] = {}
            for end_user_type in END_USER_TYPES:
                mine = [r for r in listed if r.get("end_user_type") == end_user_type]
                sid = str(mine[0]["sid"]) if mine and mine[0].get("sid") else None
                rules[end_user_type] = (rule_from_twilio(mine, requirement), sid)
            return Fetched(rules)

        yield fetch


class RegulationsRefresher:
    """One refresh pass at a time (a lease in `task_leases`), bounded per pass."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        fetcher: FetcherFactory = twilio_fetcher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db, self.settings, self.fetcher, self.clock = db, settings, fetcher, clock
        self.owner = f"regulations:{socket.gethostname()}:{os.getpid()}"

    def due(self, now: datetime) -> list[tuple[str, str]]:
        """The pairs to fetch, stale ones first, then missing ones, then the oldest: of the
        configured countries and those the latest phone contacts asked for, each of the four
        number types (one the country does not sell is recorded as such)."""
        settings = self.settings
        with self.db.read() as session:
            countries = set(settings.regulation_countries) | store.recent_phone_countries(
                session, settings.twilio_regulations_recent
            )
            rows = store.entries(session, countries)
        held: dict[tuple[str, str], list[TwilioRegulation]] = {}
        for row in rows:
            held.setdefault((row.country, row.number_type), []).append(row)
        ranked: list[tuple[int, float, str, str]] = []
        for country in sorted(countries):
            for number_type in NUMBER_TYPES:
                entries = held.get((country, number_type), [])
                if any(e.stale for e in entries):
                    ranked.append((0, 0.0, country, number_type))
                elif {e.end_user_type for e in entries} != set(END_USER_TYPES):
                    ranked.append((1, 0.0, country, number_type))
                else:
                    age = max((now - e.fetched_at).total_seconds() for e in entries)
                    if age >= settings.twilio_regulations_ttl_s:
                        ranked.append((2, -age, country, number_type))
        ranked.sort()
        return [(country, number_type) for _, _, country, number_type in ranked]

    def run(self) -> dict[str, int]:
        """One pass: `refreshed` pairs, `failed` ones (Twilio did not answer: tried at the
        next pass), `due` before the pass; `skipped` 1 when another pass holds the lease."""
        settings = self.settings
        now = self.clock()
        per_pass = settings.twilio_regulations_per_pass
        # Long enough for the pass's requests (three per pair at most) each at its read timeout.
        hold_s = 60.0 + 3 * per_pass * settings.provider_read_timeout_s
        with self.db.write() as session:
            if not store.take_lease(session, LEASE, self.owner, now, hold_s):
                return {"refreshed": 0, "failed": 0, "due": 0, "skipped": 1}
        refreshed = failed = 0
        due: list[tuple[str, str]] = []
        try:
            due = self.due(now)
            todo = due[:per_pass]
            if todo:
                with self.fetcher(settings) as fetch:
                    for country, number_type in todo:
                        try:
                            fetched = fetch(country, number_type)
                        except ProviderError as exc:
                            failed += 1
                            log.warning(
                                "regulations_fetch_failed",
                                country=country,
                                number_type=number_type,
                                error_code=exc.code,
                            )
                            continue
                        self._record(country, number_type, fetched)
                        refreshed += 1
        finally:
            with self.db.write() as session:
                store.let_go(session, LEASE, self.owner)
        if refreshed or failed:
            log.info("regulations_refreshed", refreshed=refreshed, failed=failed, due=len(due))
        return {"refreshed": refreshed, "failed": failed, "due": len(due), "skipped": 0}

    def _record(self, country: str, number_type: str, fetched: Fetched) -> None:
        now = self.clock()
        with self.db.write() as session:
            for end_user_type, (rule, sid) in fetched.rules.items():
                store.put(
                    session, country, number_type, end_user_type, rule, sid, now, fetched.sold
                )


def mark_stale(db: Database, country: str, number_type: str, refused: str) -> None:
    """A purchase Twilio refused for want of a `bundle` (21649) or an `address` (21631)
    contradicts a cached entry that said none was needed, and a search of a list Twilio does
    not have (`sold`: a 404) one that said the type is sold: the next pass fetches it first,
    and the API stops judging by it meanwhile (its copy reloads within
    `PROVISIONER_TWILIO_REGULATIONS_RELOAD_S`)."""
    with db.write() as session:
        marked = store.mark_stale(session, country.upper(), number_type, refused)
    if marked:
        log.info(
            "regulations_marked_stale", country=country, number_type=number_type, refused=refused
        )


class RegulationRules:
    """The API's copy of the cached entries: read whole from the database at most every
    `PROVISIONER_TWILIO_REGULATIONS_RELOAD_S` (in a thread of its own, so a request never
    waits for it), consulted in memory by every request."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        # (country, number type, end-user type) -> (rule, fetched at, stale, sold)
        self._entries: dict[tuple[str, str, str], tuple[Rule, datetime, bool, bool]] = {}
        self._loaded_at = -math.inf  # time.monotonic() of the last load
        self._lock = threading.Lock()

    def reload(self) -> None:
        """Read the entries now (the reloading thread, and tests)."""
        try:
            with self.db.read() as session:
                rows = store.entries(session)
                entries = {
                    (r.country, r.number_type, r.end_user_type): (
                        Rule(r.bundle, r.address),
                        r.fetched_at,
                        r.stale,
                        r.sold,
                    )
                    for r in rows
                }
        except Exception as exc:  # the database is down: the copy we have stays
            log.warning("regulations_reload_failed", error=type(exc).__name__)
            return
        self._entries = entries

    def _refresh_soon(self) -> None:
        if time.monotonic() - self._loaded_at < self.settings.twilio_regulations_reload_s:
            return
        if not self._lock.acquire(blocking=False):
            return  # another request started the reload
        self._loaded_at = time.monotonic()

        def load() -> None:
            try:
                self.reload()
            finally:
                self._lock.release()

        threading.Thread(target=load, name="regulations-reload", daemon=True).start()

    def _fresh(
        self, country: str, number_type: str, end_user_type: str | None
    ) -> list[tuple[Rule, bool]]:
        """The usable entries (for `end_user_type`, else every one): (rule, sold) each."""
        self._refresh_soon()
        now = self.clock()
        max_age_s = self.settings.twilio_regulations_max_age_s
        found: list[tuple[Rule, bool]] = []
        for kind in (end_user_type,) if end_user_type else END_USER_TYPES:
            entry = self._entries.get((country.upper(), number_type, kind))
            if entry is not None and usable(entry[1], entry[2], now, max_age_s):
                found.append((entry[0], entry[3]))
        return found

    def cached(self, country: str, number_type: str, end_user_type: str | None) -> Rule | None:
        """The fresh cached rule of a type the country sells (for `end_user_type`; else one
        that needs documents when any end-user type's does), or None when no usable entry
        exists."""
        return strictest(rule for rule, sold in self._fresh(country, number_type, end_user_type)
                         if sold)  # fmt: skip

    def sells(self, country: str, number_type: str) -> bool:
        """Whether Twilio sells `country`'s `number_type` numbers: its fresh answer, else the
        built-in table's (every type for a country outside it)."""
        fresh = self._fresh(country, number_type, None)
        if fresh:
            return all(sold for _, sold in fresh)
        return rule_for(country, number_type) is not None

    def rule_for(
        self, country: str, number_type: str, end_user_type: str | None = None
    ) -> Rule | None:
        """What `country`'s `number_type` numbers need: Twilio's cached answer when fresh,
        else the built-in table's; None when the country does not sell that type (Twilio's
        fresh answer, else the built-in table's)."""
        if not self.sells(country, number_type):
            return None
        return (
            self.cached(country, number_type, end_user_type)
            or rule_for(country, number_type)
            or Rule(False, "none")
        )
