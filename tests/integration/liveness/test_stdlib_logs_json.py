"""The standard library's loggers (Celery's, kombu's, uvicorn's) come out of the real
processes as the project's JSON lines, not in their own text formats."""

from __future__ import annotations

import json
import socket
import time

import httpx
from support.pipeline import wait_for
from support.services import free_port

KEYS = {"event", "level", "timestamp", "logger"}
# Printed by Celery's own SIGTERM handler straight to stdout (a signal handler must not take
# the logging locks): the one line that is not ours to render.
CELERY_SIGNAL_LINE = "worker: Warm shutdown (MainProcess)"


def json_lines(path) -> list[dict]:
    """Every line of a process's output, each of which must be one JSON object."""
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and line != CELERY_SIGNAL_LINE]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON line: {line!r}") from exc
    return parsed


def test_celery_worker_lines_are_json_with_our_keys(make_settings, sandbox, spawn):
    settings = make_settings(sandbox_url=sandbox.url, log_format="json",
                             twilio_auth_token="sandbox-token", google_access_token="sandbox-token")
    worker = spawn("worker", settings, "--concurrency", "2")

    def ready() -> dict | None:
        return next((line for line in json_lines(worker.log)
                     if line.get("logger", "").startswith("celery")
                     and "ready." in line["event"]), None)

    line = wait_for(ready, timeout=60, every=0.3)
    assert KEYS <= line.keys(), line
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    worker.stop()
    assert all(line.keys() >= {"event", "level", "timestamp"} for line in json_lines(worker.log))


def test_uvicorn_lines_are_json_with_our_keys(make_settings, spawn):
    settings = make_settings(api_port=free_port(), log_format="json")
    api = spawn("api", settings)
    url = f"http://127.0.0.1:{settings.api_port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, every=0.2)
    # Not HTTP at all: uvicorn's protocol logs a warning on logger `uvicorn.error`.
    with socket.create_connection(("127.0.0.1", settings.api_port), timeout=5) as conn:
        conn.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        time.sleep(0.2)

    def warned() -> dict | None:
        return next((line for line in json_lines(api.log)
                     if line.get("logger") == "uvicorn.error"), None)

    line = wait_for(warned, timeout=20, every=0.2)
    assert KEYS <= line.keys(), line
    assert line["level"] == "warning"
    assert "Invalid HTTP request" in line["event"]
