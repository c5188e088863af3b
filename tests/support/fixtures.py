"""Fixtures shared by the whole suite: real Redis, a real database, settings, the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.services import DatabaseService, RedisService, clean_environment, serve_in_thread
from worker.settings import Settings
from worker.store import accounts, credits
from worker.store.db import Database

clean_environment()


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    service = RedisService(tmp_path_factory.mktemp("redis"))
    yield service
    service.close()


@pytest.fixture(scope="session")
def database_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseService]:
    service = DatabaseService(tmp_path_factory.mktemp("db"))
    yield service
    service.close()


@pytest.fixture
def database_url(database_service: DatabaseService, tmp_path: Path) -> str:
    return database_service.fresh_url(tmp_path)


@pytest.fixture
def redis_url(redis_service: RedisService) -> str:
    redis_service.flush()
    return redis_service.url


@pytest.fixture
def make_settings(
    database_url: str, redis_url: str, tmp_path: Path
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": redis_url,
            "var_dir": tmp_path / "var",
            "rate_limit": "100000/second",
            "log_format": "console",
            "webhook_allow_private": True,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


@dataclass
class Tenant:
    account_id: int
    api_key: str
    assistant_ids: list[int]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def make_tenant(db: Database) -> Callable[..., Tenant]:
    def make(credits_cents: int = 10_000, assistants: int = 1, name: str = "acme") -> Tenant:
        with db.write() as session:
            account = accounts.create_account(session, name)
            key = accounts.issue_key(session, account.id)
            if credits_cents:
                credits.top_up(session, account.id, credits_cents, f"topup:test:{account.id}")
            ids = accounts.create_assistants(session, account.id, None, assistants)
        return Tenant(account.id, key, ids)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


@pytest.fixture
def api_url(settings: Settings, db: Database) -> Iterator[str]:
    """The real API, served by uvicorn over loopback HTTP."""
    from api_stub.app import create_app

    with serve_in_thread(create_app(settings, db=db)) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        yield http
