"""`provisioner dev` (what `make run` runs) as a newcomer uses it: start it, read the key and
assistant id it prints, provision one contact of each type, read the metrics, stop it; and a
second run over the same var/ directory."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
from support.services import free_port

from sandbox.testing import SandboxControl

START_TIMEOUT_S = 90
BODIES = {
    "phone": {"contact_type": "phone", "phone_country": "US", "user_phone": "+14155552671"},
    "email": {"contact_type": "email", "email_local": "dev.e2e", "first_name": "Ada",
              "last_name": "Lovelace"},
    # A sender of its own (the metrics below count its create_sender step), not the pool's.
    "whatsapp": {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671",
                 "whatsapp_sender": "dedicated"},
}
FAMILIES_API = ["provisioner_http_requests_total", "provisioner_queue_depth"]
FAMILIES_WORKER = [
    "provisioner_contacts_total",
    "provisioner_step_duration_seconds",
    "provisioner_provider_calls_total",
    "provisioner_webhook_attempts_total",
]


class DevStack:
    """`provisioner dev` in a subprocess; its stdout read line by line in a thread."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.ports = {"API": free_port(), "SANDBOX": free_port(), "WORKER_METRICS": free_port()}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env["PROVISIONER_VAR_DIR"] = str(var_dir)
        env["PROVISIONER_API_PORT"] = str(self.ports["API"])
        env["PROVISIONER_SANDBOX_PORT"] = str(self.ports["SANDBOX"])
        env["PROVISIONER_WORKER_METRICS_PORT"] = str(self.ports["WORKER_METRICS"])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "dev"], env=env, cwd=var_dir.parent,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.printed = self._read_until("Assistant ids: ")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def _read_until(self, prefix: str) -> dict[str, str]:
        """The `Name: value` lines printed up to the one starting with `prefix`."""
        printed: dict[str, str] = {}
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no start-up lines in time:\n" + self.output()) from None
            if line is None:
                raise AssertionError("provisioner dev exited:\n" + self.output())
            if match := re.match(r"^([A-Z][A-Za-z ]+): (.+)$", line):
                printed[match[1]] = match[2]
            if line.startswith(prefix):
                return printed

    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    def descendants(self) -> list[psutil.Process]:
        """Every process the stack started: its children (and theirs), and the embedded Redis
        (a daemon, so not a child)."""
        found = psutil.Process(self.proc.pid).children(recursive=True)
        redis_pid = int((self.var_dir / "redis.pid").read_text())
        return [*found, psutil.Process(redis_pid)]

    def stop(self, signum: signal.Signals) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def assert_gone(processes: list[psutil.Process], stack: DevStack) -> None:
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}\n{stack.output()}"


def metric_lines(url: str) -> list[str]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text.splitlines()


def sample(lines: list[str], name: str, **labels: str) -> float | None:
    for line in lines:
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def provision_each_type_and_check_logs_and_metrics(stack: DevStack) -> None:
    printed = stack.printed
    api, key = printed["API"], printed["API key"]
    assistant = int(printed["Assistant ids"].split()[0])
    assert api == f"http://127.0.0.1:{stack.ports['API']}"
    assert key.startswith("cp_")
    # The printed console link signs in and opens the console.
    with httpx.Client(follow_redirects=True, timeout=10) as browser:
        console = browser.get(printed["Console"])
    assert console.status_code == 200 and "Overview" in console.text
    # A copy-paste curl per contact type, with the key and an assistant filled in.
    curls = [line for line in stack.lines if line.startswith("curl -s -X POST")]
    for contact_type in BODIES:
        assert any(f'"contact_type": "{contact_type}"' in c and key in c for c in curls)
    SandboxControl(printed["Sandbox"].split()[0]).set_faults(sender_online_after_s=0.2)

    headers = {"Authorization": f"Bearer {key}"}
    request_id = f"e2e-{uuid.uuid4().hex[:8]}"
    ids = {}
    with httpx.Client(base_url=api, headers=headers, timeout=10) as http:
        for contact_type, body in BODIES.items():
            posted = http.post(f"/v0/assistant/{assistant}/contact", json=body,
                               headers={"X-Request-ID": request_id})
            assert posted.status_code == 202, posted.text
            assert posted.headers["x-request-id"] == request_id
            ids[contact_type] = posted.json()["info"]["id"]
        deadline = time.monotonic() + 60
        while True:
            got = {t: http.get(f"/v0/assistant/{assistant}/contact/{i}").json()["info"]
                   for t, i in ids.items()}
            if all(c["status"] == "active" for c in got.values()):
                break
            assert time.monotonic() < deadline, f"{got}\n{stack.output()}"
            time.sleep(0.3)

    # The children's lines are interleaved, each under its name; the worker's lines for a
    # contact carry the request id of the API call that made it.
    for name in ("api", "worker", "beat"):  # the sandbox logs warnings only
        assert any(line.startswith(f"{name} ") for line in stack.lines), name
    worker_lines = [line for line in stack.lines if line.startswith("worker ")]
    for contact_id in ids.values():
        assert any(contact_id in line and f"request_id={request_id}" in line
                   for line in worker_lines), f"{contact_id}\n{stack.output()}"
    assert key not in "\n".join(line for line in stack.lines if " | " in line)

    # Metrics: every family, from the API and from the worker's own port.
    api_metrics = metric_lines(f"{api}/metrics")
    worker_metrics = metric_lines(f"http://127.0.0.1:{stack.ports['WORKER_METRICS']}/metrics")
    for family in FAMILIES_API:
        assert f"# TYPE {family.removesuffix('_total')}" in "\n".join(api_metrics), family
    for family in FAMILIES_WORKER:
        assert f"# TYPE {family.removesuffix('_total')}" in "\n".join(worker_metrics), family
    route = "/v0/assistant/{assistant_id}/contact"
    assert sample(api_metrics, "provisioner_http_requests_total", route=route,
                  method="POST", status="202") == 3
    assert sample(api_metrics, "provisioner_queue_depth", queue="interactive") is not None
    for contact_type in BODIES:
        assert sample(worker_metrics, "provisioner_contacts_total", type=contact_type,
                      outcome="active") == 1
    assert sample(worker_metrics, "provisioner_step_duration_seconds_count",
                  type="whatsapp", step="create_sender") == 1
    assert sample(worker_metrics, "provisioner_provider_calls_total", provider="google",
                  status="200") >= 1
    assert sample(worker_metrics, "provisioner_provider_calls_total", provider="twilio",
                  status="201") >= 1


def test_make_run_provisions_each_type_stops_on_signals_and_reruns_on_the_same_data(tmp_path):
    var_dir = tmp_path / "var"
    first = DevStack(var_dir)
    try:
        provision_each_type_and_check_logs_and_metrics(first)
        processes = first.descendants()
        assert len(processes) >= 5  # sandbox, api, worker, beat, redis
    finally:
        code = first.stop(signal.SIGINT)  # Ctrl-C
    assert code == 0, first.output()
    assert_gone(processes, first)

    # A second run reuses the database and the demo account (and its key), topped up again.
    second = DevStack(var_dir)
    try:
        for name in ("API key", "Assistant ids", "Account id"):
            assert second.printed[name] == first.printed[name], name
        credits = httpx.get(f"{second.printed['API']}/v0/credits", timeout=10,
                            headers={"Authorization": f"Bearer {second.printed['API key']}"})
        assert credits.json()["info"]["available"] == "25.00"
        processes = second.descendants()
    finally:
        code = second.stop(signal.SIGTERM)
    assert code == 0, second.output()
    assert_gone(processes, second)
