"""Retry-After parsing, next-page URL handling and the transport-error wrapper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from worker.providers.errors import Retryable
from worker.providers.http import parse_retry_after, relative_url, transport_errors

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_delay_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_retry_after_http_date_in_the_future_is_seconds_from_now() -> None:
    header = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=NOW) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    header = format_datetime(NOW - timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(header, now=NOW) == 0.0


def test_retry_after_obsolete_date_format_without_zone_is_gmt() -> None:
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:10", now=NOW) == pytest.approx(10.0)


def test_relative_url_drops_scheme_and_host_keeps_path_and_query() -> None:
    url = "https://messaging.twilio.com/v2/Channels/Senders?PageSize=50&Page=1&PageToken=a%2Bb"
    assert relative_url(url) == "/v2/Channels/Senders?PageSize=50&Page=1&PageToken=a%2Bb"
    assert relative_url("/2010-04-01/Accounts/AC1/X.json?Page=2") == (
        "/2010-04-01/Accounts/AC1/X.json?Page=2"
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
        (httpx.PoolTimeout("busy"), "timeout"),
        (httpx.RemoteProtocolError("peer closed"), "incomplete_response"),
        (httpx.ConnectError("refused"), "connection_error"),
        (httpx.ReadError("reset"), "connection_error"),
    ],
)
def test_transport_errors_become_retryable(error: Exception, code: str) -> None:
    with pytest.raises(Retryable) as caught, transport_errors("twilio"):
        raise error
    assert caught.value.code == code
    assert caught.value.provider == "twilio"
    assert caught.value.status is None
