"""Error responses in each emulated provider's own wire format.

Twilio (both the 2010 REST API and the v2 Senders API) answers
`{"code", "message", "more_info", "status"}`; Google answers
`{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}`.
Microsoft Graph answers `{"error": {"code", "message", "innerError"}}`; the OAuth token
endpoints (Google's and Microsoft's) answer RFC 6749's `{"error", "error_description"}`.
Which format a path gets is decided by `provider_for_path`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi.responses import JSONResponse

Provider = Literal["twilio", "google", "graph", "oauth"]

TWILIO_PREFIXES = ("/2010-04-01/", "/v2/Channels/", "/v2/RegulatoryCompliance/")
GOOGLE_PREFIXES = ("/admin/directory/",)
GRAPH_PREFIXES = ("/v1.0/",)
OAUTH_PATHS = ("/token",)  # Google's; Microsoft's are /{tenant}/oauth2/... and /{tenant}/v2.0/...
OAUTH_MARKERS = ("/oauth2/", "/v2.0/.well-known/")
CONTROL_PREFIX = "/_sandbox"

# Twilio error codes used by the sandbox (https://www.twilio.com/docs/errors/<code>).
TW_BAD_REQUEST = 20001
TW_AUTHENTICATE = 20003
TW_NOT_FOUND = 20404
TW_CONFLICT = 20409
TW_TOO_MANY_REQUESTS = 20429
TW_INTERNAL = 20500
TW_UNAVAILABLE = 20503
TW_NUMBER_INVALID = 21421
TW_NUMBER_NOT_AVAILABLE = 21422
TW_NUMBER_REQUIRED = 21452
TW_ADDRESS_INVALID = 21628  # "The address you have provided cannot be validated."
TW_ADDRESS_SUGGESTION = 21629  # the same, with a suggested address in the message
TW_ADDRESS_REQUIRED = 21631  # "Phone Number Requires an Address" (or one meeting its locality)
TW_BUNDLE_REQUIRED = 21649  # a twilio-approved bundle for the number's country and type
TW_BUNDLE_INVALID_TYPE = 22200  # "Invalid End-User Type or Number Type"
TW_SENDER_VALIDATION = 63100
TW_WABA_INVALID = 63101  # "WABA ID provided is not valid or unable to be used"
TW_WABA_FULL = 63104  # not in the docs we read; see docs/sandbox.md

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def provider_for_path(path: str) -> Provider | None:
    """The provider whose protocol a request path belongs to; None for control/unknown paths."""
    if path.startswith(TWILIO_PREFIXES):
        return "twilio"
    if path.startswith(GOOGLE_PREFIXES):
        return "google"
    if path.startswith(GRAPH_PREFIXES):
        return "graph"
    if path in OAUTH_PATHS or any(m in path for m in OAUTH_MARKERS):
        return "oauth"
    return None


def is_provider_path(path: str) -> bool:
    """Everything outside `/_sandbox` is provider traffic (faults and stats apply)."""
    return not (path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"))


def twilio_body(status: int, code: int, message: str) -> dict[str, object]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(twilio_body(status, code, message), status_code=status, headers=headers)


def google_body(
    status: int, reason: str, message: str, detail: str | None = None, **extra: str
) -> dict[str, object]:
    """`detail` is the per-error message when it differs from the top-level one."""
    item = {"message": detail or message, "domain": "global", "reason": reason, **extra}
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [item],
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
    }


def google_error(
    status: int,
    reason: str,
    message: str,
    headers: dict[str, str] | None = None,
    detail: str | None = None,
    **extra: str,
) -> JSONResponse:
    return JSONResponse(
        google_body(status, reason, message, detail, **extra), status_code=status, headers=headers
    )


def graph_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "innerError": {"date": _now()}}}
    return JSONResponse(body, status_code=status, headers=headers)


def oauth_error(
    status: int, error: str, description: str, codes: list[int] | None = None
) -> JSONResponse:
    body: dict[str, object] = {"error": error, "error_description": description}
    if codes:
        body["error_codes"] = codes
    return JSONResponse(body, status_code=status)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def server_error(provider: Provider | None, status: int) -> JSONResponse:
    """A provider-style 500 or 503 (the `error_rate` and drop-after-commit faults)."""
    if provider == "graph":
        if status == 503:
            return graph_error(503, "serviceNotAvailable", "Service unavailable.")
        return graph_error(500, "generalException", "An internal server error occurred.")
    if provider == "oauth":
        return oauth_error(status, "temporarily_unavailable", "The service is unavailable.")
    if provider == "google":
        if status == 503:
            return google_error(503, "backendError", "The service is currently unavailable.")
        return google_error(500, "backendError", "Backend Error")
    if status == 503:
        return twilio_error(503, TW_UNAVAILABLE, "Service Unavailable")
    return twilio_error(500, TW_INTERNAL, "Internal Server Error")


def rate_limited(provider: Provider | None, retry_after: int) -> JSONResponse:
    """Twilio: 429 code 20429. Google Directory: 403 `userRateLimitExceeded` (its limits page)."""
    headers = {"Retry-After": str(retry_after)}
    if provider in ("graph", "oauth"):
        return graph_error(
            429, "TooManyRequests", "Too many requests; retry after a while.", headers=headers
        )
    if provider == "google":
        return google_error(
            403,
            "userRateLimitExceeded",
            "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' "
            "of service 'admin.googleapis.com'.",
            headers=headers,
        )
    return twilio_error(429, TW_TOO_MANY_REQUESTS, "Too Many Requests", headers=headers)


def concurrency_limited() -> JSONResponse:
    """Twilio's answer to a request over the account's concurrency limit: 429, code 20429,
    no Retry-After (its error page: never processed, always safe to retry after a back-off)."""
    return twilio_error(
        429,
        TW_TOO_MANY_REQUESTS,
        "Too Many Requests: the account is sending too many concurrent REST API requests",
    )


def not_found(provider: Provider | None, path: str) -> JSONResponse:
    if provider == "graph":
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{path}'.")
    if provider == "oauth":
        return oauth_error(404, "invalid_request", "Not found")
    if provider == "google":
        return google_error(404, "notFound", "Not Found")
    return twilio_error(404, TW_NOT_FOUND, f"The requested resource {path} was not found")


def method_not_allowed(provider: Provider | None) -> JSONResponse:
    if provider == "graph":
        return graph_error(405, "Request_BadRequest", "Method not allowed.")
    if provider == "oauth":
        return oauth_error(405, "invalid_request", "Method not allowed")
    if provider == "google":
        return google_error(405, "httpMethodNotAllowed", "Method Not Allowed")
    return twilio_error(405, 20004, "Method not allowed")
