"""Helpers for tests: run the sandbox as a subprocess and drive its control endpoints.

with SandboxProcess() as url:
    control = SandboxControl(url)
    control.reset(inventory_per_country=5)
    control.set_faults(error_rate=1.0, seed=1)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

_REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class SandboxProcess:
    """Starts `python -m sandbox` on a free loopback port; the context value is its base URL."""

    def __init__(
        self,
        inventory_per_country: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.inventory_per_country = inventory_per_country
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  # closed in stop()

    def start(self) -> str:
        command = [sys.executable, "-m", "sandbox", "--host", self.host, "--port", str(self.port)]
        if self.inventory_per_country is not None:
            command += ["--inventory", str(self.inventory_per_country)]
        # The command is this interpreter and our own module, never outside input.
        self._process = subprocess.Popen(  # noqa: S603
            command,
            cwd=_REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"sandbox exited with {self._process.returncode}: {self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/_sandbox/stats", timeout=1.0).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"sandbox did not answer within {self.startup_timeout}s: {self.output()}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if not self._log.closed:
            self._log.close()

    def output(self) -> str:
        """What the sandbox printed so far (its log level is warning)."""
        if self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")[-4000:]

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SandboxControl:
    """A thin httpx client for the `/_sandbox` control endpoints."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def reset(self, inventory_per_country: int | None = None) -> dict[str, Any]:
        body: dict[str, int] = {}
        if inventory_per_country is not None:
            body["inventory_per_country"] = inventory_per_country
        return self._object("POST", "/_sandbox/reset", json=body)

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return self._object("PUT", "/_sandbox/faults", json=faults)

    def faults(self) -> dict[str, Any]:
        return self._object("GET", "/_sandbox/faults")

    def resources(self) -> dict[str, Any]:
        return self._object("GET", "/_sandbox/resources")

    def stats(self) -> dict[str, Any]:
        return self._object("GET", "/_sandbox/stats")

    def sink(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/_sandbox/sink/{name}")
        return result

    def set_sink_status(
        self, name: str, status: int, delay_ms: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status}
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        return self._object("PUT", f"/_sandbox/sink/{name}", json=body)

    def approve_bundle(self, sid: str) -> dict[str, Any]:
        """Twilio's review approves a submitted regulatory bundle."""
        return self._object("POST", f"/_sandbox/twilio/bundles/{sid}/approve")

    def reject_bundle(self, sid: str) -> dict[str, Any]:
        return self._object("POST", f"/_sandbox/twilio/bundles/{sid}/reject")

    def invalidate_address(self, sid: str) -> dict[str, Any]:
        """The address fails Twilio's validation: purchases that need it get 21628."""
        return self._object("POST", f"/_sandbox/twilio/addresses/{sid}/invalidate")

    def set_regulation(
        self, country: str, number_type: str, *, bundle: bool, address: str
    ) -> dict[str, Any]:
        """Twilio changes what `country`'s `number_type` numbers (Twilio's spelling: local,
        mobile, national, toll-free) need: a bundle or not, and the address requirement."""
        return self._object(
            "PUT",
            f"/_sandbox/twilio/regulations/{country}/{number_type}",
            json={"bundle": bundle, "address": address},
        )

    def sink_url(self, name: str) -> str:
        return f"{self.url}/_sandbox/sink/{name}"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self._json(method, path, **kwargs)
        if not isinstance(data, dict):
            raise TypeError(f"{method} {path} answered {data!r}, not an object")
        return data
