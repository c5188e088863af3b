"""Which documents a phone number needs before Twilio sells it: a regulatory bundle, an
address (and where), per country and number type; and whether an account's documents meet
them.

The table mirrors Twilio's Regulations (`numbers.twilio.com/v2/RegulatoryCompliance/
Regulations?IsoCountry=&NumberType=`) and the `address_requirements` its number lists show,
as Twilio's Phone Number Regulatory Guidelines per country describe them (docs/providers.md,
"Numbers outside the US"). It is a table in code, not a live answer: the API judges a request
without calling Twilio, and a rule Twilio changes later is still enforced by Twilio at purchase
time (the contact then fails with Twilio's code). Countries not in the table are not judged.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL = "local"
NUMBER_TYPES = ("local", "mobile", "national", "toll_free")
# Twilio's spelling of each type in Bundles and Regulations.
TWILIO_NUMBER_TYPE = {"local": "local", "mobile": "mobile", "national": "national",
                      "toll_free": "toll-free"}  # fmt: skip
# The AvailablePhoneNumbers list of each type.
NUMBER_LIST = {"local": "Local", "mobile": "Mobile", "national": "National",
               "toll_free": "TollFree"}  # fmt: skip
ADDRESS_REQUIREMENTS = ("none", "any", "local", "foreign")


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
