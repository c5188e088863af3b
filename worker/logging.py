"""structlog setup, and the redaction every log line passes through.

JSON lines in production, console rendering for humans. Secrets are dropped by key name and
people's phone numbers and names are masked, whatever the call site passed.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = re.compile(
    r"(api_?key|secret|token|password|authorization|auth|private_key|service_account|assertion)",
    re.I,
)
PHONE_KEYS = {"user_phone", "user_whatsapp_number", "phone", "phone_number", "address"}
NAME_KEYS = {"first_name", "last_name", "given_name", "family_name", "name"}
_HANDLER_NAME = "provisioner"  # our root handler, replaced (not doubled) by a second configure


def mask_phone(value: str) -> str:
    """`+14155552671` -> `+1415*****71`: enough to correlate, not enough to dial."""
    if len(value) <= 6:
        return "*" * len(value)
    return value[:5] + "*" * (len(value) - 7) + value[-2:]


def mask_name(value: str) -> str:
    return value[:1] + "***" if value else value


def _mask(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask(k, v) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    if SECRET_KEYS.search(key):
        return "[redacted]"
    if key in PHONE_KEYS and value.removeprefix("whatsapp:").startswith("+"):
        number = value.removeprefix("whatsapp:")
        return value[: len(value) - len(number)] + mask_phone(number)
    if key in NAME_KEYS:
        return mask_name(value)
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key != "event":
            event[key] = _mask(key, event[key])
    return event


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """structlog for our own lines, and the root logger for the standard library's (Celery,
    kombu, uvicorn, alembic): both rendered alike, JSON lines with the same keys."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (print() writes the newline separately, so lines from two
        # threads could be spliced together).
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Standard-library records take the same processors (plus the logger's name) through
    # structlog's ProcessorFormatter on one root handler; Celery leaves the root logger to us
    # (worker.runtime.celery_app answers its setup_logging signal), uvicorn too (log_config=None).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared[:2], structlog.stdlib.add_logger_name, *shared[2:]],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(logging.getLevelName(level.upper()))
    logging.captureWarnings(True)  # Python's warnings too (logger `py.warnings`), not raw text
    # httpx logs every request at INFO with its URL, which can carry phone numbers and
    # addresses; our own step lines say what happened, masked.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
