"""Fixtures for live status: the API over loopback HTTP with the console on, and a pipeline
run in-process whose transitions wake the API through Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.pipeline import FAST
from support.services import serve_in_thread

from worker.settings import Settings

CONSOLE_TOKEN = "console-test-token-0123456789"


@pytest.fixture
def psettings(make_settings, sandbox) -> Settings:
    return make_settings(sandbox_url=sandbox.url, console_token=CONSOLE_TOKEN, **FAST)


@pytest.fixture
def live_url(psettings, db) -> Iterator[str]:
    from api_stub.app import create_app

    with serve_in_thread(create_app(psettings, db=db)) as url:
        yield url
