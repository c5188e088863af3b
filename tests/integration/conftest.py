"""Fixtures for the integration tests: settings tuned for tests, the service, the pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.pipeline import FAST

from worker.app.contacts import ContactService
from worker.providers import Providers
from worker.runtime.celery_app import CeleryPublisher, create_celery
from worker.runtime.pipeline import Pipeline
from worker.settings import Settings


@pytest.fixture
def psettings(make_settings, sandbox) -> Settings:
    return make_settings(sandbox_url=sandbox.url, **FAST)


@pytest.fixture
def service(psettings, db) -> ContactService:
    return ContactService(db, psettings, CeleryPublisher(create_celery(psettings)))


@pytest.fixture
def pipeline(psettings, db) -> Iterator[Pipeline]:
    providers = Providers.from_settings(psettings)
    pipeline = Pipeline(db, providers, psettings)
    yield pipeline
    pipeline.close()
    providers.close()
