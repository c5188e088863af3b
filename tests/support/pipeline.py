"""Helpers for pipeline tests: submit contacts, wait for them, drive the pipeline in-process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from worker.pipeline import Pipeline
from worker.service import ContactService


def submit(service: ContactService, tenant, body: dict[str, Any], assistant: int | None = None) -> str:
    import json

    assistant = assistant or tenant.assistant_ids[0]
    reply = service.submit(tenant.account_id, assistant, json.dumps(body).encode(),
                           path=f"/v0/assistant/{assistant}/contact")
    return reply.body["info"]["id"]


def wait_for(predicate: Callable[[], Any], timeout: float = 60, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def statuses(db) -> dict[str, str]:
    from sqlalchemy import select

    from worker.store.models import Contact

    with db.read() as session:
        return dict(session.execute(select(Contact.id, Contact.status)).all())


def all_terminal(db, count: int | None = None) -> bool:
    found = statuses(db)
    if count is not None and len(found) != count:
        return False
    return all(s in ("active", "failed") for s in found.values())


def drive(pipeline: Pipeline, contact_id: str, owner: str = "test-runner", limit: int = 200) -> str:
    """Run the pipeline in-process the way the task does, sleeping out each delay."""
    for _ in range(limit):
        outcome = pipeline.run(contact_id, owner)
        if outcome.again_in_s is None:
            return outcome.state
        time.sleep(outcome.again_in_s)
    raise AssertionError("contact did not finish")
