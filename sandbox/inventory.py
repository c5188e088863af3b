"""Deterministic phone-number inventory per country and number type, built from phonenumbers'
example numbers.

Each supported country and number type (Twilio's AvailablePhoneNumbers lists: Local, Mobile,
National, TollFree) has a fixed, infinite-looking sequence of numbers that
`phonenumbers.is_valid_number` accepts: the country's example number of that type with
its trailing digits replaced by a counter. The sandbox sells the first N of that
sequence (N = inventory per country). Sequences are generated lazily and cached for
the life of the process, so `POST /_sandbox/reset` costs nothing.
"""

from __future__ import annotations

import threading

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

# Countries whose numbers the sandbox sells ("Local" numbers). The contract requires at
# least US, CA, GB, DE, FR, NL, SE and AU; the rest are cheap to add.
SUPPORTED_COUNTRIES: tuple[str, ...] = (
    "US", "CA", "GB", "DE", "FR", "NL", "SE", "AU",
    "IE", "ES", "IT", "BE", "AT", "CH", "DK", "NO", "FI", "PL", "PT", "NZ",
)  # fmt: skip

# Twilio's number types (the AvailablePhoneNumbers list of each) -> phonenumbers' type of
# the example number each inventory is built from. "National" numbers are the non-geographic
# ones (GB 03, DE 018, FR 08..): libphonenumber's UAN.
NUMBER_TYPES: dict[str, PhoneNumberType] = {
    "local": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "national": PhoneNumberType.UAN,
    "toll_free": PhoneNumberType.TOLL_FREE,
}
# The lists each country offers beyond Local (Twilio's AvailablePhoneNumbers country
# resource lists its subresources; the US and Canada have no Mobile or National list).
EXTRA_TYPES: dict[str, tuple[str, ...]] = {
    "US": ("toll_free",),
    # Canada's toll-free numbers are NANP numbers that libphonenumber places in the US: the
    # sandbox sells toll-free numbers of the +1 plan under US only.
    "GB": ("mobile", "national", "toll_free"),
    "DE": ("mobile", "national", "toll_free"),
    "FR": ("mobile", "national", "toll_free"),
    "AU": ("mobile", "toll_free"),
    "IE": ("mobile", "national", "toll_free"),
}


def number_types(country: str) -> tuple[str, ...]:
    """The number types sold in a supported country (upper-case ISO code)."""
    return ("local", *EXTRA_TYPES.get(country.upper(), ()))


# How many trailing digits of the example number are replaced by the counter.
_COUNTER_DIGITS = 6


class CountryInventory:
    """The lazily generated, never-changing sequence of sellable numbers of one country and
    number type."""

    def __init__(self, country: str, number_type: str = "local") -> None:
        example = phonenumbers.example_number_for_type(country, NUMBER_TYPES[number_type])
        if example is None:
            raise ValueError(f"no example {number_type} number for {country}")
        self.country = country
        self.number_type = number_type
        self.calling_code = example.country_code
        nsn = phonenumbers.national_significant_number(example)
        width = min(_COUNTER_DIGITS, len(nsn) - 2)
        self._prefix = nsn[:-width]
        self._width = width
        self._next_counter = 0
        self._numbers: list[str] = []
        self._index: dict[str, int] = {}
        self._lock = threading.Lock()

    def first(self, n: int) -> list[str]:
        """The first `n` numbers of the sequence (fewer only if the sequence runs out)."""
        with self._lock:
            self._extend_to(n)
            return self._numbers[:n]

    def position(self, e164: str, within: int) -> int | None:
        """The index of `e164` in the sequence if it is among the first `within`, else None."""
        with self._lock:
            self._extend_to(within)
            pos = self._index.get(e164)
        return pos if pos is not None and pos < within else None

    def _extend_to(self, n: int) -> None:
        limit = 10**self._width
        while len(self._numbers) < n and self._next_counter < limit:
            counter = str(self._next_counter).zfill(self._width)
            self._next_counter += 1
            candidate = f"+{self.calling_code}{self._prefix}{counter}"
            parsed = phonenumbers.parse(candidate, None)
            if not phonenumbers.is_valid_number(parsed):
                continue
            if phonenumbers.region_code_for_number(parsed) != self.country:
                continue
            self._index[candidate] = len(self._numbers)
            self._numbers.append(candidate)


_inventories: dict[tuple[str, str], CountryInventory] = {}
_inventories_lock = threading.Lock()


def inventory_for(country: str, number_type: str = "local") -> CountryInventory | None:
    """The cached inventory of a supported country (upper-case ISO code) and one of its
    number types, else None."""
    country = country.upper()
    if country not in SUPPORTED_COUNTRIES or number_type not in number_types(country):
        return None
    key = (country, number_type)
    with _inventories_lock:
        inv = _inventories.get(key)
        if inv is None:
            inv = _inventories[key] = CountryInventory(country, number_type)
        return inv


def locate(e164: str, within: int) -> tuple[str, str] | None:
    """(country, number type) of the inventory whose first `within` numbers hold `e164`."""
    country = country_of(e164)
    if country is None or country not in SUPPORTED_COUNTRIES:
        return None
    for number_type in number_types(country):
        inv = inventory_for(country, number_type)
        if inv is not None and inv.position(e164, within) is not None:
            return country, number_type
    return None


def country_of(e164: str) -> str | None:
    """The ISO country of an E.164 number, or None when it does not parse."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(parsed)


def friendly_format(e164: str) -> str:
    """Twilio's default FriendlyName: the number in national format, e.g. "(201) 555-0123"."""
    parsed = phonenumbers.parse(e164, None)
    return phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL)
