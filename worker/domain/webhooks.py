"""Webhook rules: which URLs may be called, when to try again, and how a delivery is signed.

Pure: no I/O here. The sender resolves names and connects (worker/runtime/delivery.py); this module
decides whether a URL and the addresses it resolved to are acceptable targets, what an
attempt's outcome is called, when the next attempt is due, and what headers a delivery
carries (the Standard Webhooks scheme, signed by the `standardwebhooks` library).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import quote, urlsplit

from standardwebhooks import Webhook

from worker.domain.errors import InvalidRequest

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
MAX_URL_LENGTH = 2048
RESPONSE_EXCERPT_BYTES = 1024  # the first KiB of a receiver's answer is kept per attempt

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # after the last scheduled attempt, or the endpoint answered 410
    NO_ENDPOINT = "no_endpoint"  # the account had no endpoint: kept and listed, not sent


class Outcome(StrEnum):
    """What one attempt came to; a stable value to count by."""

    SUCCEEDED = "succeeded"  # a 2xx answer
    HTTP_ERROR = "http_error"  # any other status, redirects included (never followed)
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"  # refused, reset, TLS, DNS failure
    REFUSED_ADDRESS = "refused_address"  # the URL or an address it resolved to is not allowed


def classify_status(status_code: int) -> Outcome:
    return Outcome.SUCCEEDED if 200 <= status_code < 300 else Outcome.HTTP_ERROR


GONE = 410  # the receiver asks us to stop: the endpoint is disabled (the contract)


# --- targets -------------------------------------------------------------------------------


class RefusedTarget(InvalidRequest):
    """A URL that may not be called; `reason` is a short stable name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"webhook url refused: {detail}", {"url": detail})
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL: what to connect to (after resolution) and what to ask for."""

    scheme: str  # http | https
    host: str  # lower-case ASCII name, or the canonical IP literal
    port: int
    path: str  # path and query, at least "/"
    ip: IPAddress | None  # set when the host is an IP literal (nothing to resolve)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def parse_target(url: object) -> Target:
    """Check a URL's form: http(s) only, no credentials, a host that is a DNS name or a
    canonically written IP address. Numeric spellings that resolvers read as addresses
    (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`) are refused rather than normalised."""
    if not isinstance(url, str) or not url:
        raise RefusedTarget("invalid_url", "must be an http or https URL")
    if len(url) > MAX_URL_LENGTH:
        raise RefusedTarget("invalid_url", f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise RefusedTarget("invalid_url", "must not contain spaces, control characters or '\\'")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RefusedTarget("scheme", "only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise RefusedTarget("credentials", "must not contain credentials")
    try:
        port = parts.port
    except ValueError:
        raise RefusedTarget("invalid_url", "has an invalid port") from None
    port = port or (443 if scheme == "https" else 80)
    if port == 0:
        raise RefusedTarget("invalid_url", "has an invalid port")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise RefusedTarget("invalid_url", "has no host")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    path = quote(path, safe="/?=&%:@!$'()*+,;~-._")  # ASCII on the wire, as given otherwise

    if parts.netloc.split("@")[-1].startswith("["):  # an IPv6 literal
        if "%" in raw_host:
            raise RefusedTarget("odd_address", "IPv6 zone identifiers are not allowed")
        try:
            ip6 = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise RefusedTarget("invalid_url", "has an invalid IPv6 address") from None
        return Target(scheme, ip6.compressed, port, path, ip6)

    host = raw_host.rstrip(".")
    try:
        ip4 = ipaddress.IPv4Address(host)  # only the canonical dotted quad parses
    except ValueError:
        ip4 = None
    if ip4 is not None:
        return Target(scheme, str(ip4), port, path, ip4)
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise RefusedTarget("invalid_url", "has an invalid host name") from None
    labels = ascii_host.split(".")
    if not all(_LABEL.match(label) for label in labels) or len(ascii_host) > 253:
        raise RefusedTarget("invalid_url", "has an invalid host name")
    if _NUMERIC_LABEL.match(labels[-1]):
        # No top-level domain is numeric: this is an address written in a way that some
        # resolvers accept (decimal, hex, octal, short forms) and that we will not guess at.
        raise RefusedTarget("odd_address", "IP addresses must be written as a.b.c.d or [v6]")
    if ascii_host == "localhost" or ascii_host.endswith(".localhost"):
        raise RefusedTarget("loopback", "resolves to a loopback address")
    return Target(scheme, ascii_host, port, path, None)


_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address (a short name), or None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "link_local"
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return address_refusal(inner)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "cgnat"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "private"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not_public"
    return None


def check_addresses(addresses: Sequence[IPAddress], *, allow_private: bool) -> None:
    """Every address a name resolved to must be public (unless `allow_private`): a name with
    one public and one private address could be answered by either."""
    if not addresses:
        raise RefusedTarget("unresolvable", "the host does not resolve")
    if allow_private:
        return
    for ip in addresses:
        reason = address_refusal(ip)
        if reason is not None:
            raise RefusedTarget(reason, f"resolves to a {reason.replace('_', '-')} address")


# --- schedule ------------------------------------------------------------------------------


def attempts_allowed(schedule: Sequence[int]) -> int:
    """The first attempt is immediate; each schedule entry is the wait before one more."""
    return 1 + len(schedule)


def next_delay(schedule: Sequence[int], attempts_made: int) -> int | None:
    """Seconds until the next attempt after `attempts_made` failed ones, or None when that
    was the last."""
    if attempts_made < 1:
        return 0
    if attempts_made > len(schedule):
        return None
    return schedule[attempts_made - 1]


# --- secrets and signatures ----------------------------------------------------------------


def new_secret() -> str:
    """`whsec_` and 32 random bytes in base64, the form Standard Webhooks libraries read."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signed_headers(
    msg_id: str, timestamp: datetime, body: str, signing_secrets: Iterable[str]
) -> dict[str, str]:
    """The Standard Webhooks headers; one `v1,<sig>` per secret, space-separated (during a
    rotation's grace period the new secret's first, then the old one's)."""
    signatures = [Webhook(s).sign(msg_id, timestamp, body) for s in signing_secrets]
    if not signatures:
        raise ValueError("at least one secret is needed to sign")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
