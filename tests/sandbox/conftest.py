"""Plain httpx clients for the sandbox's provider protocols (no project code involved)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sandbox_http import ACCOUNT

from sandbox.testing import SandboxControl


@pytest.fixture
def twilio(sandbox: SandboxControl) -> Iterator[httpx.Client]:
    """A Twilio REST/Senders client authenticated as ACCOUNT."""
    with httpx.Client(base_url=sandbox.url, auth=(ACCOUNT, "token"), timeout=5.0) as client:
        yield client


@pytest.fixture
def google(sandbox: SandboxControl) -> Iterator[httpx.Client]:
    headers = {"Authorization": "Bearer ya29.sandbox"}
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=5.0) as client:
        yield client
