"""What kind of provider call a request is, for the sandbox's counters.

A deployment pays for provider calls, and each provider limits them (Twilio's per-account
concurrency, Google's and Microsoft's per-tenant quotas), so the figure that says what a contact
costs is its calls by kind, not its seconds. `call_kind` names each request the emulators serve
as `<provider>.<kind>`:

- `search`: a number search (`AvailablePhoneNumbers/{country}/{list}.json`);
- `countries`: the countries and the number lists each has (`AvailablePhoneNumbers.json`,
  `AvailablePhoneNumbers/{country}.json`);
- `buy`: a number purchase (`POST IncomingPhoneNumbers.json`);
- `create`: a user insert (Google, Graph) or a sender registration (Senders);
- `lookup`: a read that finds a resource by what we tagged it with (a list with a filter, a
  user by key) before creating or deleting it;
- `poll`: a read of one known resource's state (a sender until ONLINE, a number by sid);
- `update`, `delete`, `license` (Graph's `assignLicense`), `token` (the OAuth endpoints);
- `messages`: Twilio's Messages list (the SMS a number received: a sender's verification code);
- `regulatory`: Twilio's Regulations, Bundles and Addresses;
- `other`: anything else (discovery documents, SKU lists).

Pure: no state, no framework.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

_TWILIO_API = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/(?P<rest>.+)$")
_SENDERS = "/v2/Channels/Senders"
_REGULATORY = "/v2/RegulatoryCompliance/"
_GOOGLE_USERS = "/admin/directory/v1/users"
_GRAPH = "/v1.0/"


def call_kind(method: str, path: str) -> str:
    """`<provider>.<kind>` for one provider request (see the module's docstring)."""
    method = method.upper()
    match = _TWILIO_API.match(path)
    if match:
        return "twilio." + _twilio(method, match["rest"])
    if path.startswith(_REGULATORY):
        return "twilio.regulatory"
    if path == _SENDERS or path.startswith(_SENDERS + "/"):
        one = path != _SENDERS
        return "senders." + _crud(method, one, poll_one=True)
    if path == _GOOGLE_USERS or path.startswith(_GOOGLE_USERS + "/"):
        return "google." + _crud(method, path != _GOOGLE_USERS, poll_one=False)
    if path.startswith(_GRAPH):
        return "graph." + _graph(method, path[len(_GRAPH) :])
    if path == "/token" or "/oauth2/" in path:
        return "oauth.token" if method == "POST" else "oauth.other"
    return "other." + method.lower()


def _twilio(method: str, rest: str) -> str:
    if rest == "AvailablePhoneNumbers.json" or (
        rest.startswith("AvailablePhoneNumbers/") and rest.count("/") == 1
    ):
        return "countries" if method == "GET" else "other"
    if rest.startswith("AvailablePhoneNumbers/"):
        return "search" if method == "GET" else "other"
    if rest == "IncomingPhoneNumbers.json":
        return {"POST": "buy", "GET": "lookup"}.get(method, "other")
    if rest.startswith("IncomingPhoneNumbers/"):
        return {"GET": "poll", "POST": "update", "DELETE": "delete"}.get(method, "other")
    if rest == "Messages.json" and method == "GET":
        return "messages"  # the SMS a number received (a sender's verification code)
    if rest.startswith("Addresses"):
        return "regulatory"
    return "other"


def _crud(method: str, one: bool, *, poll_one: bool) -> str:
    """A collection (`one` False) and its members: create, look up, poll, update, delete."""
    if method == "POST":
        return "update" if one else "create"
    if method == "GET":
        return "poll" if one and poll_one else "lookup"
    if method in ("PUT", "PATCH"):
        return "update"
    if method == "DELETE":
        return "delete"
    return "other"


def _graph(method: str, rest: str) -> str:
    if rest.startswith("users"):
        if rest.endswith("/assignLicense"):
            return "license"
        return _crud(method, rest != "users", poll_one=False)
    return "other"


def twilio_account(scope: Mapping[str, Any]) -> str:
    """The Twilio account a request counts against: the HTTP Basic username (the Account SID,
    as both Twilio APIs take it), else the `Accounts/{sid}` of its path, else `-`."""
    for name, value in scope.get("headers", ()):
        if name.lower() != b"authorization":
            continue
        scheme, _, encoded = value.decode("latin-1").partition(" ")
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                break
            if user:
                return user
        break
    match = _TWILIO_API.match(scope.get("path", ""))
    return match["account"] if match else "-"


__all__ = ["call_kind", "twilio_account"]
