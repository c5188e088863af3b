"""The Procfile as honcho runs it, against the test session's Redis and database (real servers
when PROVISIONER_TEST_* are set): `release` migrates and exits 0; `web`, `worker`, `webhooks` and
`beat` start and stay up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from honcho.environ import parse_procfile
from support.services import free_port, settings_env

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"
HONCHO = [sys.executable, "-m", "honcho", "-f", str(PROCFILE), "-d", str(ROOT)]


def procfile_env(settings) -> dict[str, str]:
    env = settings_env(settings)
    # `provisioner` is the console script of the environment running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_procfile_has_every_process_type():
    processes = parse_procfile(PROCFILE.read_text()).processes
    assert set(processes) == {"release", "web", "worker", "webhooks", "beat"}
    assert processes["release"] == "provisioner migrate"
    # Webhook deliveries have workers of their own: a slow receiver never holds a
    # provisioning thread.
    assert "--queues webhooks" in processes["webhooks"]
    assert "webhooks" not in processes["worker"]


def test_release_migrates_and_exits_zero(settings):
    done = subprocess.run([*HONCHO, "start", "release"], env=procfile_env(settings),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database is up to date" in done.stdout


def test_web_workers_and_beat_start_and_stay_up(settings):
    port = free_port()
    env = procfile_env(settings)
    # As a deployment has them: a worker with the real providers and no credentials refuses
    # to start (tests/integration/liveness/test_startup_checks.py).
    env["PROVISIONER_TWILIO_AUTH_TOKEN"] = env["PROVISIONER_GOOGLE_ACCESS_TOKEN"] = "deploy-token"
    log = settings.var_dir.parent / "honcho.log"
    with open(log, "wb") as out:
        honcho = subprocess.Popen([*HONCHO, "start", "-p", str(port), "web", "worker", "webhooks",
                                   "beat"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            assert honcho.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # The worker reports ready; beat writes its schedule under var/.
        while not (log.read_text().count("ready.") >= 2 and
                   list(settings.var_dir.glob("celerybeat-schedule*"))):
            assert honcho.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        children = psutil.Process(honcho.pid).children(recursive=True)
        time.sleep(3)  # honcho stops everything when one process exits: all must stay up
        assert honcho.poll() is None, log.read_text()
        assert all(child.is_running() for child in children)
        text = log.read_text()
        for name in ("web.1", "worker.1", "webhooks.1", "beat.1"):
            assert name in text, text
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(30)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
