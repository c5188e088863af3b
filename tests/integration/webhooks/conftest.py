"""Fixtures for webhooks: fast settings and the services (worker/beat processes come from
`spawn` in support/pipeline.py)."""

from __future__ import annotations

import pytest
from support.webhooks import FAST

from worker.app.contacts import ContactService
from worker.app.webhooks import WebhookService
from worker.runtime.celery_app import CeleryPublisher, create_celery
from worker.settings import Settings


@pytest.fixture
def wsettings(make_settings, sandbox) -> Settings:
    return make_settings(sandbox_url=sandbox.url, **FAST)


@pytest.fixture
def service(wsettings, db) -> ContactService:
    return ContactService(db, wsettings, CeleryPublisher(create_celery(wsettings)))


@pytest.fixture
def webhooks(wsettings, db) -> WebhookService:
    return WebhookService(db, wsettings)
