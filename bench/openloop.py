"""An open-loop HTTP load generator: requests leave on a fixed schedule, not after the answer
to the one before, and each latency is counted from the time the request was due (so queueing
in the server shows up, as wrk2 counts it; a closed loop such as wrk's waits and hides it).

Plain asyncio streams and HTTP/1.1 keep-alive, no HTTP library: a request due finds an idle
connection or opens a new one (up to `max_connections`; past that it waits, and the wait is
counted in its latency); one not answered within `timeout` is given up, counted as a
timeout and in the latencies at the time it was given up. Each request's path comes from
`path_for(i)`, so every POST can name an assistant of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class OpenLoopResult:
    rate: float
    seconds: float
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # of the answered requests
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    timeouts: int = 0  # no answer within the timeout: counted in the latencies at the timeout
    connections: int = 0
    late_sends: int = 0  # requests that left more than 5 ms after they were due

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def ok_rate(self, status: int) -> float:
        return self.statuses[status] / self.seconds


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed by the server")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            raise ConnectionResetError("the server closed the connection")
        return status


async def _run(
    base_url: str,
    rate: float,
    seconds: float,
    path_for: Callable[[int], str],
    body: bytes,
    headers: dict[str, str],
    max_connections: int,
    timeout: float,
) -> OpenLoopResult:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    result = OpenLoopResult(rate, seconds)
    idle: list[_Conn] = []
    slots = asyncio.Semaphore(max_connections)
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        request = (
            f"POST {path_for(i)} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with slots:
            conn = idle.pop() if idle else None
            while True:
                reused = conn is not None
                if conn is None:
                    reader, writer = await asyncio.open_connection(host, port)
                    conn = _Conn(reader, writer)
                    result.connections += 1
                try:
                    status = await asyncio.wait_for(conn.exchange(request), timeout)
                except TimeoutError:
                    result.timeouts += 1
                    result.latencies_ms.append(1000 * (loop.time() - due))
                    conn.writer.close()
                    return
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    conn.writer.close()
                    conn = None
                    if reused:  # an idle connection the server had closed (keep-alive timeout)
                        continue
                    result.errors += 1
                    return
                break
            result.latencies_ms.append(1000 * (loop.time() - due))
            result.statuses[status] += 1
            idle.append(conn)

    tasks = []
    start = loop.time() + 0.05
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            result.late_sends += 1
        tasks.append(asyncio.create_task(one(i, due)))
        result.sent += 1
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.writer.close()
    return result


def open_loop(
    base_url: str,
    *,
    rate: float,
    seconds: float,
    path_for: Callable[[int], str],
    body: bytes,
    headers: dict[str, str],
    max_connections: int = 512,
    timeout: float = 10.0,
) -> tuple[OpenLoopResult, float]:
    """Sends `rate` x `seconds` POSTs on schedule; the result and the generator's CPU seconds."""
    cpu0 = time.process_time()
    result = asyncio.run(
        _run(base_url, rate, seconds, path_for, body, headers, max_connections, timeout)
    )
    return result, time.process_time() - cpu0
