"""Which documents a phone number needs before Twilio sells it: a regulatory bundle, an
address (and where), per country and number type; and whether an account's documents meet
them.

Two sources. Twilio's own answer: its Regulations (`numbers.twilio.com/v2/
RegulatoryCompliance/Regulations?IsoCountry=&NumberType=&EndUserType=`) and the
`address_requirements` its number lists show, fetched by beat's refresh and cached
(`rule_from_twilio` reads them; worker/app/regulations.py keeps the cache). And the built-in
table below, as Twilio's Phone Number Regulatory Guidelines per country describe them
(docs/providers.md, "Numbers outside the US"): what is judged when no fresh cached entry
exists. Either way the API judges a request without calling Twilio, and Twilio still
enforces its rule at purchase time (the contact then fails with Twilio's code, and the
cached entry is marked stale). Countries in neither are not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

LOCAL = "local"
NUMBER_TYPES = ("local", "mobile", "national", "toll_free")
# Twilio's spelling of each type in Bundles and Regulations.
TWILIO_NUMBER_TYPE = {"local": "local", "mobile": "mobile", "national": "national",
                      "toll_free": "toll-free"}  # fmt: skip
# The AvailablePhoneNumbers list of each type.
NUMBER_LIST = {"local": "Local", "mobile": "Mobile", "national": "National",
               "toll_free": "TollFree"}  # fmt: skip
ADDRESS_REQUIREMENTS = ("none", "any", "local", "foreign")
END_USER_TYPES = ("individual", "business")


@dataclass(frozen=True)
class Rule:
    """A country's number type: whether it needs an approved bundle, and its address
    requirement (`none`, `any`: anywhere, `local`: in the number's country, `foreign`:
    outside it)."""

    bundle: bool
    address: str

    @property
    def needs_documents(self) -> bool:
        return self.bundle or self.address != "none"


@dataclass(frozen=True)
class Documents:
    """What an account (or the platform's default) holds for one country and number type."""

    bundle_sid: str | None = None
    address_sid: str | None = None
    address_country: str | None = None  # the address's IsoCountry, as Twilio answered it


_NONE = Rule(False, "none")
RULES: dict[str, dict[str, Rule]] = {
    "US": {"local": _NONE, "toll_free": _NONE},
    "CA": {"local": _NONE},
    "GB": {t: Rule(True, "any") for t in ("local", "mobile", "national", "toll_free")},
    "DE": {"local": Rule(True, "local")}
    | {t: Rule(True, "any") for t in ("mobile", "national", "toll_free")},
    "FR": {"local": Rule(True, "local")}
    | {t: Rule(True, "any") for t in ("mobile", "national", "toll_free")},
    "AU": {"local": Rule(True, "local")} | {t: Rule(True, "any") for t in ("mobile", "toll_free")},
    "IE": {"local": Rule(True, "local")}
    | {t: Rule(True, "any") for t in ("mobile", "national", "toll_free")},
}


def rule_for(country: str, number_type: str) -> Rule | None:
    """The rule of a country's number type; `_NONE` for a country outside the table; None
    when the table knows the country and it has no such numbers."""
    types = RULES.get(country.upper())
    if types is None:
        return _NONE
    return types.get(number_type)


def number_types_of(country: str) -> tuple[str, ...]:
    types = RULES.get(country.upper())
    return tuple(types) if types is not None else NUMBER_TYPES


def address_meets(requirement: str, number_country: str, address_country: str | None) -> bool:
    """Whether an address in `address_country` (None: no address) meets `requirement` for a
    number of `number_country`."""
    if requirement == "none":
        return True
    if address_country is None:
        return False
    if requirement == "local":
        return address_country.upper() == number_country.upper()
    if requirement == "foreign":
        return address_country.upper() != number_country.upper()
    return True


def missing(rule: Rule, country: str, documents: Documents | None) -> str | None:
    """`bundle` or `address` when `documents` lack what `rule` needs, else None."""
    docs = documents or Documents()
    if rule.bundle and not docs.bundle_sid:
        return "bundle"
    if rule.address != "none" and (
        not docs.address_sid or not address_meets(rule.address, country, docs.address_country)
    ):
        return "address"
    return None


def rule_from_twilio(
    regulations: Sequence[Mapping[str, Any]], address_requirements: str | None
) -> Rule:
    """The rule Twilio's answer gives for one country, number type and end-user type:
    `regulations`, the Regulations it listed for them (a bundle is needed when one names
    any requirement), and `address_requirements`, what its number list shows on a number of
    that type (None: it showed none). Without a number to read, a Regulation that asks for
    a proof of address stands for an address anywhere (`any`)."""
    requirements = [r.get("requirements") or {} for r in regulations]
    bundle = any(req.get("end_user") or req.get("supporting_document") for req in requirements)
    if address_requirements in ADDRESS_REQUIREMENTS:
        return Rule(bundle, str(address_requirements))
    proof = any(
        document.get("requirement_name") == "proof_of_address"
        for req in requirements
        for group in req.get("supporting_document") or []
        for document in group
    )
    return Rule(bundle, "any" if proof else "none")


def usable(fetched_at: datetime, stale: bool, now: datetime, max_age_s: float) -> bool:
    """Whether a cached entry may judge a request: not contradicted by a purchase since, and
    no older than `max_age_s` (a refresh that keeps failing must not freeze a rule)."""
    return not stale and (now - fetched_at).total_seconds() <= max_age_s


def strictest(rules: Iterable[Rule]) -> Rule | None:
    """One rule that needs documents when any of `rules` does (to know, without the
    account's documents at hand, whether to look at them at all); None for no rules."""
    found = list(rules)
    if not found:
        return None
    needing = [r for r in found if r.needs_documents]
    if not needing:
        return found[0]
    address = next((r.address for r in needing if r.address != "none"), "none")
    return Rule(any(r.bundle for r in needing), address)
