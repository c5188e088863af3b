"""Fixtures for a contact's later life: the real API and a real worker, with monthly fees on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from support.pipeline import FAST, wait_for
from support.services import serve_in_thread

from worker.settings import Settings

FEES = {
    "monthly_cost_phone": "1.50",
    "monthly_cost_email": "3.00",
    "monthly_cost_whatsapp": "5.00",
    "setup_cost_phone": "1.00",
    "setup_cost_email": "0.50",
    "setup_cost_whatsapp": "2.00",
}


@pytest.fixture
def lsettings(make_settings, sandbox) -> Settings:
    return make_settings(sandbox_url=sandbox.url, **FAST, **FEES)


@pytest.fixture
def api(lsettings, db) -> Iterator[httpx.Client]:
    from api_stub.app import create_app

    with serve_in_thread(create_app(lsettings, db=db)) as url, httpx.Client(
        base_url=url, timeout=10
    ) as client:
        yield client


@pytest.fixture
def worker(spawn, lsettings):
    return spawn("worker", lsettings, "--concurrency", "4")


class Contacts:
    """The API as a customer drives it: create, read, delete, wait for a status."""

    def __init__(self, api: httpx.Client, tenant) -> None:
        self.api, self.tenant = api, tenant

    def create(self, body: dict[str, Any], assistant: int | None = None) -> dict[str, Any]:
        assistant = assistant or self.tenant.assistant_ids[0]
        got = self.api.post(
            f"/v0/assistant/{assistant}/contact", json=body, headers=self.tenant.headers
        )
        assert got.status_code == 202, got.text
        return got.json()["info"]

    def get(self, contact: dict[str, Any]) -> dict[str, Any]:
        got = self.api.get(self.url(contact), headers=self.tenant.headers)
        assert got.status_code == 200, got.text
        return got.json()["info"]

    def delete(self, contact: dict[str, Any]) -> httpx.Response:
        return self.api.delete(self.url(contact), headers=self.tenant.headers)

    def wait(self, contact: dict[str, Any], *statuses: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (c := self.get(contact))["status"] in statuses and c, timeout=timeout
        )

    def ledger(self, **params: Any) -> list[dict[str, Any]]:
        got = self.api.get("/v0/credits/ledger", params=params, headers=self.tenant.headers)
        assert got.status_code == 200, got.text
        return got.json()["info"]

    def credits(self) -> dict[str, str]:
        return self.api.get("/v0/credits", headers=self.tenant.headers).json()["info"]

    @staticmethod
    def url(contact: dict[str, Any]) -> str:
        return f"/v0/assistant/{contact['assistant_id']}/contact/{contact['id']}"


@pytest.fixture
def customer(api, make_tenant) -> Callable[..., Contacts]:
    def make(**tenant: Any) -> Contacts:
        return Contacts(api, make_tenant(**tenant))

    return make
