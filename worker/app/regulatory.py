"""An account's Twilio regulatory documents (`/v0/providers/twilio/regulatory/{country}`): set
after Twilio confirmed them, listed, deleted while no live number uses them; and the
documents a phone request of a country and number type goes with (the account's, else the
platform's default), refused before anything is reserved when the rules (Twilio's cached
Regulations when fresh, else the built-in table: worker/app/regulations.py) need more."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pycountry
import structlog

from worker.app.regulations import RegulationRules
from worker.domain.errors import (
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    RegulatoryAddressRequired,
    RegulatoryBundleRequired,
    RegulatoryInUse,
)
from worker.domain.regulatory import (
    LOCAL,
    NUMBER_TYPES,
    Documents,
    missing,
)
from worker.domain.validation import unsold_type_error
from worker.domain.views import iso
from worker.providers import ProviderError
from worker.providers.twilio_regulatory import DocumentRefused, RuleOf, verify_documents
from worker.settings import Settings
from worker.store import regulatory as store
from worker.store.db import Database
from worker.store.models import TwilioRegulatory

log = structlog.get_logger(__name__)

Verifier = Callable[[Settings, str, str, str | None, str | None, RuleOf], dict[str, Any]]
_SID = {"bundle_sid": "BU", "address_sid": "AD"}


def view(row: TwilioRegulatory) -> dict[str, Any]:
    return {
        "country": row.country,
        "number_type": row.number_type,
        "bundle_sid": row.bundle_sid,
        "address_sid": row.address_sid,
        "address_country": row.address_country,
        **{k: v for k, v in row.info.items() if k in ("bundle_status", "regulation_sid",
                                                     "end_user_type")},
        "verified_at": iso(row.verified_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }  # fmt: skip


def country_code(value: str) -> str:
    code = value.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise InvalidRequest(
            "not a country", {"country": "must be an ISO 3166-1 alpha-2 code, e.g. GB"}
        )
    return code


def number_type_of(value: Any, field: str = "number_type") -> str:
    if value is None:
        value = LOCAL
    if not isinstance(value, str) or value not in NUMBER_TYPES:
        raise InvalidRequest(
            f"invalid field(s): {field}", {field: "must be one of " + ", ".join(NUMBER_TYPES)}
        )
    return value


class RegulatoryService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        verifier: Verifier = verify_documents,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.settings = settings
        self.verifier = verifier
        self.clock = clock
        # Twilio's Regulations as beat's refresh cached them, held in memory (one copy per
        # API process: Services builds one RegulatoryService).
        self.rules = RegulationRules(db, settings, clock)

    def sold_types(self, country: str) -> tuple[str, ...]:
        """The number types `country` sells: Twilio's fresh answer, else the built-in
        table's (judged in memory)."""
        return tuple(t for t in NUMBER_TYPES if self.rules.sells(country, t))

    def require_sold(
        self,
        country: str,
        number_type: str,
        field: str = "number_type",
        country_field: str = "number_type",
    ) -> None:
        """422 naming `field` when `country` does not sell `number_type` numbers (naming
        `country_field` when it sells none)."""
        if not self.rules.sells(country, number_type):
            sold = self.sold_types(country)
            raise unsold_type_error(country, number_type, sold, field, country_field)

    def needs_documents(self, country: str, number_type: str) -> bool:
        """Whether a request of `country`'s `number_type` numbers may need documents (for
        some end-user type), judged in memory."""
        rule = self.rules.rule_for(country, number_type)
        return rule is not None and rule.needs_documents

    def put(self, account_id: int, country: str, body: Any) -> dict[str, Any]:
        code = country_code(country)
        if not isinstance(body, Mapping):
            raise InvalidRequest(
                "the body must be a JSON object", {"body": "must be a JSON object"}
            )
        number_type = number_type_of(body.get("number_type"))
        self.require_sold(code, number_type)
        sids: dict[str, str | None] = {}
        errors: dict[str, str] = {}
        for name, prefix in _SID.items():
            value = body.get(name)
            if value is not None and not (
                isinstance(value, str) and value.startswith(prefix) and 2 < len(value) <= 34
            ):
                errors[name] = f"must be a Twilio {prefix}... SID"
            sids[name] = value
        if errors:
            raise InvalidRequest(f"invalid field(s): {', '.join(sorted(errors))}", errors)
        try:
            # Judged as a contact's request is: by Twilio's cached Regulations when fresh.
            learnt = self.verifier(
                self.settings,
                code,
                number_type,
                sids["bundle_sid"],
                sids["address_sid"],
                lambda end_user_type: self.rules.rule_for(code, number_type, end_user_type),
            )
        except DocumentRefused as exc:
            log.info("regulatory_refused", country=code, field=exc.field)
            raise InvalidRequest(
                f"Twilio refutes {exc.field}: {exc.message}", {exc.field: exc.message}
            ) from None
        except ProviderError as exc:
            raise ProviderUnavailable(
                f"twilio could not be reached to check the documents ({exc.code}); try again"
            ) from None
        with self.db.write() as session:
            row = store.put(
                session,
                account_id,
                code,
                number_type,
                sids["bundle_sid"],
                sids["address_sid"],
                learnt.get("address_country"),
                learnt,
                self.clock(),
            )
            shown = view(row)
        log.info("regulatory_set", country=code, number_type=number_type)
        return shown

    def list(self, account_id: int) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return [view(row) for row in store.of_account(session, account_id)]

    def delete(self, account_id: int, country: str, number_type: Any) -> None:
        code = country_code(country)
        kind = number_type_of(number_type)
        with self.db.write() as session:
            row = store.get(session, account_id, code, kind)
            if row is None:
                raise NotFound(f"no regulatory documents for {code} {kind} numbers")
            if store.in_use(session, row):
                raise RegulatoryInUse(
                    f"live contacts' {code} {kind} numbers were bought with these documents; "
                    "delete them first"
                )
            store.remove(session, row.id)

    def documents(self, account_id: int, country: str, number_type: str) -> dict[str, Any] | None:
        """What a phone request of `country`'s `number_type` numbers goes with: the
        account's documents, else the platform's default; None when the rules need none.
        Raises the 422 naming `phone_country` when they need what neither has."""
        if not self.needs_documents(country, number_type):
            return None
        with self.db.read() as session:
            row = store.get(session, account_id, country, number_type)
            found = (
                (Documents(row.bundle_sid, row.address_sid, row.address_country), "account")
                if row is not None
                else None
            )
            # The account's bundle says for which end-user type it was made; else judged by
            # the strictest of them.
            end_user_type = (row.info or {}).get("end_user_type") if row is not None else None
        rule = self.rules.rule_for(country, number_type, end_user_type or None)
        if rule is None or not rule.needs_documents:
            return None
        if found is None:
            default = self.settings.twilio_regulatory_defaults.get(f"{country}/{number_type}")
            if default:
                found = (
                    Documents(
                        default.get("bundle_sid"),
                        default.get("address_sid"),
                        default.get("address_country"),
                    ),
                    "platform",
                )
        docs, source = found if found is not None else (Documents(), "none")
        lack = missing(rule, country, docs)
        where = f"PUT /v0/providers/twilio/regulatory/{country}"
        if lack == "bundle":
            raise RegulatoryBundleRequired(
                f"{country} {number_type} numbers need an approved Twilio regulatory bundle, "
                f"and the account has none ({where})",
                {"phone_country": f"no regulatory bundle for {country} {number_type} numbers"},
            )
        if lack == "address":
            raise RegulatoryAddressRequired(
                f"{country} {number_type} numbers need an address ({rule.address}), and the "
                f"account has none that meets it ({where})",
                {"phone_country": f"no {rule.address} address for {country} {number_type} numbers"},
            )
        return {
            "source": source,
            "bundle_sid": docs.bundle_sid,
            "address_sid": docs.address_sid,
            "address_country": docs.address_country,
        }
