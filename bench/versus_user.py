"""The scenario a user runs (issue 17), ours beside the peer: the workers already up and idle,
then contacts arriving through the API, timed from the first POST until every one is terminal.

Ours as a user starts it: `provisioner api`, `provisioner worker --processes P --concurrency C`
on its default queues (interactive, bulk, webhooks) and `provisioner beat` (its own process, as
in the Procfile). Each run gets a database of its own and a fresh stack. Three runs per round:

- `ours-single`: N contacts POSTed one by one, `--user-clients` (32) in flight at a time;
- `ours-batch`: the same N as one `POST /v0/contact/batch` (published to the `bulk` queue);
- `peer-single`: the peer's API and workers (bench/peer/; it has no batch route), N POSTs.

jobs/s = N / (first POST to the last contact seen terminal, polled every 0.1 s); CPU ms per job
as worker_run counts it (the worker processes and beat + the run database's PostgreSQL backends
and shared processes + Redis; the sandbox apart), here including the API's statements, since
the contacts are accepted during the run. Also jobs/s over the database's window (first
contact started to last terminal update), which leaves out the API's part and the poll.

Before each measured run, `--user-warmup` (64) contacts of other assistants are POSTed and run to
the end, webhook deliveries included: a worker process builds its runtime (database pool,
provider clients) on its first task, which costs a fresh stack about a second, and a running
worker has paid that long before. Each run's timeline (counts by status, queue lengths, unacked
messages, every 0.1 s) is saved as JSON beside the report, to see where a run waits; with
versus.py's `--profile`, py-spy (GIL holder) records the first worker process of each run.

    .venv/bin/python bench/versus.py --skip-api --skip-workers --user-contacts 200
    .venv/bin/python bench/versus.py --skip-api --skip-workers --processes 1 \
        --user-runs ours-single,ours-batch --rounds 3 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from enqueue import PHONE_BODY
from measure import Meter, fmt, record_profile, summarise_worker_profile
from stack import (
    OUT,
    ROOT,
    TERMINAL,
    Databases,
    Poller,
    Sandbox,
    inventory_for,
    provisioner_cmd,
    provisioner_env,
    seed,
    start_api,
    stop_process,
)
from versus_runs import PEER_KEY, peer_env, start_peer_api, start_peer_workers

RUNS = ("ours-single", "ours-batch", "peer-single")
QUEUES = {"ours": ("interactive", "bulk", "webhooks"), "peer": ("peer",)}
POLL_S = 0.1


@dataclass
class UserRun:
    label: str
    jobs: int
    seconds: float = 0.0  # first POST to every accepted contact terminal (polled)
    posted_s: float = 0.0  # first POST to the last answer
    accepted: int = 0
    window_s: float = 0.0  # per the database: first contact started to last terminal update
    first_start_s: float | None = None  # first POST to the first contact leaving pending
    statuses: dict[str, int] = field(default_factory=dict)
    answers: dict[int, int] = field(default_factory=dict)  # HTTP status: count
    cpu: dict[str, float | None] = field(default_factory=dict)
    requests: int = 0  # provider requests the sandbox served
    # Messages the workers hold unacked, from the first start on: ours ack late (running or
    # prefetched), the peer acks early (prefetched only), so only ours reads as tasks running.
    peak_in_flight: int = 0
    mean_in_flight: float = 0.0
    queue_peak: dict[str, int] = field(default_factory=dict)
    timeline: str = ""
    profile: str | None = None
    error: str | None = None

    @property
    def jobs_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def window_jobs_per_s(self) -> float:
        return self.accepted / self.window_s if self.window_s else 0.0

    def cpu_ms(self, key: str) -> float | None:
        value = self.cpu.get(key)
        return None if value is None or not self.accepted else 1000 * value / self.accepted

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms(k) or 0.0 for k in ("worker", "db", "redis"))

    @property
    def others_cores(self) -> float | None:
        """Cores busy with what this run does not count (the API, other people's processes)."""
        secs, busy = self.cpu.get("seconds"), self.cpu.get("machine_busy")
        if not secs or busy is None:
            return None
        counted = ("worker", "db", "redis", "sandbox", "bench")
        return (busy - sum(self.cpu.get(k) or 0.0 for k in counted)) / secs

    def line(self) -> str:
        return (
            f"{self.label}: {self.accepted} accepted (answers {self.answers}), all terminal in "
            f"{self.seconds:.2f} s = {self.jobs_per_s:.1f} jobs/s (posted in "
            f"{self.posted_s:.2f} s, first start after {fmt(self.first_start_s)} s, database "
            f"window {self.window_s:.2f} s); tasks in flight: peak {self.peak_in_flight}, "
            f"mean {self.mean_in_flight:.1f}; queue peaks {self.queue_peak}; calls/job "
            f"{self.requests / max(self.accepted, 1):.2f}; CPU {self.cpu_total_ms:.2f} ms/job "
            f"(workers {fmt(self.cpu_ms('worker'))}, db {fmt(self.cpu_ms('db'))}, redis "
            f"{fmt(self.cpu_ms('redis'))}); sandbox {fmt(self.cpu_ms('sandbox'))} ms/job, "
            f"other processes (API, other users) {fmt(self.others_cores)} cores; statuses "
            f"{self.statuses}" + (f"  ERROR: {self.error}" if self.error else "")
        )


# --- load --------------------------------------------------------------------------------------


class Sender(threading.Thread):
    """POSTs the contacts from a thread of its own (asyncio + httpx), while the caller polls."""

    def __init__(self, base: str, key: str, assistants: list[int], batch: bool, clients: int):
        super().__init__(daemon=True)
        self.base, self.key, self.assistants = base, key, assistants
        self.batch, self.clients = batch, clients
        self.answers: Counter[int] = Counter()
        self.accepted = 0
        self.finished_at: float | None = None
        self.failure: str | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
        except Exception as exc:  # reported by the caller
            self.failure = f"{type(exc).__name__}: {exc}"
        self.finished_at = time.monotonic()

    async def _send(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(
            base_url=self.base, headers=headers, limits=limits, timeout=60
        ) as client:
            if self.batch:
                item = json.loads(PHONE_BODY)
                body = {"items": [{"assistant_id": a, **item} for a in self.assistants]}
                reply = await client.post("/v0/contact/batch", json=body)
                self.answers[reply.status_code] += 1
                if reply.status_code == 202:
                    self.accepted = len(reply.json()["info"]["accepted"])
                return
            gate = asyncio.Semaphore(self.clients)

            async def one(assistant: int) -> None:
                async with gate:
                    reply = await client.post(
                        f"/v0/assistant/{assistant}/contact", content=PHONE_BODY
                    )
                self.answers[reply.status_code] += 1

            await asyncio.gather(*(one(a) for a in self.assistants))
            self.accepted = self.answers[202]


def wait_consumers(redis: Any, processes: int, procs: list[subprocess.Popen[Any]], log: str):
    """Until `processes` clients of our Redis database block in BRPOP: the workers are idle."""
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    deadline = time.monotonic() + 90
    while True:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a process exited while starting; see {log}")
        waiting = [
            c
            for c in redis.client_list()
            if int(c.get("db", -1)) == int(db) and c.get("cmd") == "brpop"
        ]
        if len(waiting) >= processes:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not start consuming in 90 s; see {log}")
        time.sleep(0.2)


def warm_up(poller: Poller, redis: Any, queues: tuple[str, ...], sender: Sender) -> Counter[str]:
    """Run the warm-up contacts to the end (their webhook deliveries too), so that each worker
    process has built its runtime (pools, clients) as a worker running for a while has; the
    status counts they leave, to subtract from the measured run's."""
    if not sender.assistants:
        return Counter()
    sender.start()
    sender.join(120)
    deadline = time.monotonic() + 120
    while True:
        counts = poller.counts()
        idle = not any(redis.llen(q) for q in queues) and not redis.hlen("unacked")
        if sender.accepted and sum(counts[s] for s in TERMINAL) >= sender.accepted and idle:
            return counts
        if time.monotonic() > deadline or not sender.accepted:
            raise RuntimeError(f"the warm-up did not finish: {sender.answers}, {dict(counts)}")
        time.sleep(POLL_S)


def window(poller: Poller, assistants: list[int]) -> float:
    """Seconds from the first measured contact's start to the last one's terminal update."""
    row = poller.conn.execute(
        "SELECT extract(epoch FROM max(updated_at) - min(started_at)) FROM contacts "
        "WHERE status IN ('active', 'failed') AND assistant_id = ANY(%s)",
        (assistants,),
    ).fetchone()
    return float(row[0] or 0.0) if row else 0.0


def drive(
    run: UserRun,
    *,
    base: str,
    key: str,
    assistants: list[int],
    batch: bool,
    clients: int,
    db: tuple[str, str],
    pids: list[int],
    sandbox: Sandbox,
    redis: Any,
    queues: tuple[str, ...],
    stall_s: float,
    warm: list[int],
    profile: tuple[int, int] | None = None,
) -> None:
    """Warm the workers up with the `warm` assistants' contacts, then send the measured ones
    and poll until every accepted one is terminal; fills `run` in. With `profile` (a pid and a
    rate), py-spy records that process (GIL holder only) over the measured part."""
    import psutil

    name, url = db
    poller = Poller(url)
    offset = warm_up(poller, redis, queues, Sender(base, key, warm, False, clients))
    meter = Meter(pids, sandbox.proc.pid, name, {poller.backend_pid}, redis)
    samples: list[dict[str, Any]] = []
    in_flight: list[int] = []
    sender = Sender(base, key, assistants, batch, clients)
    requests0 = int(sandbox.control.stats()["requests"])
    spy = None
    if profile is not None:
        raw = OUT / f"{run.timeline}-profile.txt"
        spy = record_profile(profile[0], raw, profile[1], "--nonblocking", "--gil")
        time.sleep(0.5)  # let py-spy attach
    meter.start()
    t0 = time.monotonic()
    sender.start()
    last_done, last_progress = -1, t0
    counts: Counter[str] = Counter()
    try:
        while True:
            time.sleep(POLL_S)
            now = time.monotonic()
            counts = poller.counts() - offset
            lengths = {q: int(redis.llen(q)) for q in queues}
            unacked = int(redis.hlen("unacked"))
            meter.sample()
            t = round(now - t0, 3)
            samples.append({"t": t, **dict(counts), **lengths, "unacked": unacked})
            for q, n in lengths.items():
                run.queue_peak[q] = max(run.queue_peak.get(q, 0), n)
            if run.first_start_s is None and any(s != "pending" for s in counts):
                run.first_start_s = t
            if run.first_start_s is not None:
                in_flight.append(unacked)
            done = sum(counts[s] for s in TERMINAL)
            if sender.finished_at is not None and done >= sender.accepted:
                break
            if sender.failure:
                run.error = f"sending failed: {sender.failure}"
                break
            if done != last_done:
                last_done, last_progress = done, now
            if now - last_progress > stall_s:
                run.error = f"no progress for {stall_s:g} s at {dict(counts)}"
                break
            if any(not psutil.pid_exists(p) for p in pids):
                run.error = "a worker process exited"
                break
        meter.stop()
        run.seconds = time.monotonic() - t0
        run.window_s = window(poller, assistants)
    finally:
        sender.join(60)
        poller.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.communicate(timeout=120)
            run.profile = str(raw.relative_to(ROOT)) if raw.exists() else None
    run.posted_s = (sender.finished_at or t0) - t0
    run.accepted = sender.accepted
    run.answers = dict(sorted(sender.answers.items()))
    run.statuses = dict(sorted(counts.items()))
    run.cpu = meter.result()
    run.peak_in_flight = max(in_flight, default=0)
    run.mean_in_flight = sum(in_flight) / len(in_flight) if in_flight else 0.0
    run.requests = int(sandbox.control.stats()["requests"]) - requests0
    path = OUT / f"{run.timeline}.json"
    path.write_text(json.dumps({"run": run.label, "samples": samples}))
    run.timeline = str(path.relative_to(ROOT))


# --- the two sides -----------------------------------------------------------------------------


def _launch(cmd: list[str], env: dict[str, str], log: IO[Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )


def run_ours(
    args: argparse.Namespace,
    dbs: Databases,
    sandbox: Sandbox,
    redis: Any,
    *,
    batch: bool,
    label: str,
    stamp: str,
) -> UserRun:
    """API, `provisioner worker` (default queues) and `provisioner beat`, on a new database."""
    import psutil

    n = args.user_contacts
    print(f"[{label}] ours, {n} contacts {'as one batch' if batch else 'one POST each'}")
    run = UserRun(label, n, timeline=f"versus-{stamp}-{label}")
    seeded = seed(
        dbs, label.replace("-", "_"), n + args.user_warmup, assistant_name=None, analyze=True
    )
    assistants, warm = seeded.assistant_ids[:n], seeded.assistant_ids[n:]
    redis.flushdb()
    sandbox.ready(inventory_for(n, ["US"]), args.latency_ms, ["US"])
    tmp = tempfile.mkdtemp(prefix="cp_bench_")
    env = provisioner_env(
        seeded.url,
        args.redis_url,
        tmp,
        sandbox_url=sandbox.url,
        twilio_auth_token="x",
        google_access_token="x",
        rate_limit="1000000/second",  # a single client sends them all
        log_format="json",
        worker_metrics_port="0",
    )
    log_path = OUT / f"versus-{stamp}-{label}.log"
    procs: list[subprocess.Popen[bytes]] = []
    with open(log_path, "w") as log:
        try:
            api, base = start_api(env, log)
            procs.append(api)
            worker = [*provisioner_cmd(), "worker", "--concurrency", str(args.user_concurrency)]
            worker += ["--processes", str(args.processes)]
            if args.user_queues:  # else its default queues, as a user runs it
                worker += ["--queues", args.user_queues]
            procs.append(_launch(worker, env, log))
            if not args.user_no_beat:
                procs.append(_launch([*provisioner_cmd(), "beat"], env, log))
            wait_consumers(redis, args.processes, procs, str(log_path))
            group = psutil.Process(procs[1].pid)
            pids = [group.pid, *(c.pid for c in group.children(recursive=True))]
            pids += [p.pid for p in procs[2:]]
            child = group.children()[0].pid if group.children() else group.pid
            drive(
                run,
                base=base,
                key=seeded.api_key,
                assistants=assistants,
                batch=batch,
                clients=args.user_clients,
                db=(seeded.name, seeded.url),
                pids=pids,
                sandbox=sandbox,
                redis=redis,
                queues=QUEUES["ours"],
                stall_s=args.stall_s,
                warm=warm,
                profile=(child, args.profile_rate) if args.profile else None,
            )
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
        finally:
            for proc in procs[1:]:
                stop_process(proc, signal.SIGTERM, 60)
            if procs:
                stop_process(procs[0], signal.SIGINT, 15)
    dbs.drop(seeded.name)
    print("  " + run.line(), flush=True)
    return run


def run_peer(
    args: argparse.Namespace,
    dbs: Databases,
    sandbox: Sandbox,
    redis: Any,
    *,
    label: str,
    stamp: str,
) -> UserRun:
    """The peer's API and workers on a new database, then N POSTs."""
    from peer.models import create_schema

    n = args.user_contacts
    print(f"[{label}] peer, {n} contacts one POST each")
    run = UserRun(label, n, timeline=f"versus-{stamp}-{label}")
    name, url = dbs.create(label.replace("-", "_"))
    create_schema(url, assistants=n + args.user_warmup, api_key=PEER_KEY)
    redis.flushdb()
    sandbox.ready(inventory_for(n, ["US"]), args.latency_ms, ["US"])
    log_path = OUT / f"versus-{stamp}-{label}.log"
    api = None
    workers: list[subprocess.Popen[bytes]] = []
    try:
        api = start_peer_api(dbs, args.redis_url, n + args.user_warmup, stamp, url=url)
        with open(log_path, "w") as log:
            workers = start_peer_workers(
                peer_env(url, args.redis_url, sandbox.url),
                log,
                processes=args.processes,
                concurrency=args.user_concurrency,
            )
        wait_consumers(redis, args.processes, workers, str(log_path))
        drive(
            run,
            base=api.url,
            key=PEER_KEY,
            assistants=list(range(1, n + 1)),
            batch=False,
            clients=args.user_clients,
            db=(name, url),
            pids=[w.pid for w in workers],
            sandbox=sandbox,
            redis=redis,
            queues=QUEUES["peer"],
            stall_s=args.stall_s,
            warm=list(range(n + 1, n + args.user_warmup + 1)),
            profile=(workers[0].pid, args.profile_rate) if args.profile else None,
        )
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        for w in workers:
            stop_process(w, signal.SIGTERM, 60)
        if api is not None:
            api.stop()
    dbs.drop(name)
    print("  " + run.line(), flush=True)
    return run


def user_rounds(
    args: argparse.Namespace, dbs: Databases, sandbox: Sandbox, redis: Any, stamp: str
) -> dict[str, list[UserRun]]:
    kinds = [k for k in RUNS if k in args.user_runs.split(",")]
    out: dict[str, list[UserRun]] = {k: [] for k in RUNS}
    for r in range(args.rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind in order:
            label = f"{kind}-r{r + 1}"
            if kind == "peer-single":
                run = run_peer(args, dbs, sandbox, redis, label=label, stamp=stamp)
            else:
                batch = kind == "ours-batch"
                run = run_ours(args, dbs, sandbox, redis, batch=batch, label=label, stamp=stamp)
            out[kind].append(run)
    return out


# --- what versus.py prints -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the user's scenario (workers up first, then the API)")
    group.add_argument("--skip-user", action="store_true")
    group.add_argument("--user-contacts", type=int, default=400, help="N per run")
    group.add_argument("--user-concurrency", type=int, default=32, help="over --processes")
    group.add_argument("--user-clients", type=int, default=32, help="POSTs in flight")
    group.add_argument(
        "--user-warmup", type=int, default=64, help="contacts run to the end before each run"
    )
    group.add_argument(
        "--user-queues", default="", help="ours: --queues for the worker (default: its own)"
    )
    group.add_argument("--user-no-beat", action="store_true", help="ours: no beat")
    group.add_argument("--user-runs", default=",".join(RUNS), help="which runs, comma-separated")


def _median(values: list[float]) -> float | None:
    import statistics

    values = [v for v in values if v]
    return statistics.median(values) if values else None


def rows(args: argparse.Namespace, user: dict[str, list[UserRun]]) -> list[tuple[str, ...]]:
    """versus.py's table rows: figure, ours, peer, ours / peer, target."""

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    jobs = {k: _median([r.jobs_per_s for r in runs if not r.error]) for k, runs in user.items()}
    win = {
        k: _median([r.window_jobs_per_s for r in runs if not r.error]) for k, runs in user.items()
    }
    cpu = {k: _median([r.cpu_total_ms for r in runs if not r.error]) for k, runs in user.items()}
    n, c, p = args.user_contacts, args.user_concurrency, args.processes
    peer, peer_cpu, peer_win = jobs["peer-single"], cpu["peer-single"], win["peer-single"]
    out = []
    for kind, what in (("ours-single", f"{n} POSTs"), ("ours-batch", f"{n} as one batch")):
        out.append(
            (
                f"user: jobs/s, {what} to idle workers, C = {c}, {p} processes",
                fmt(jobs[kind], 1),
                fmt(peer, 1),
                ratio(jobs[kind], peer),
                "",
            )
        )
        out.append(
            (
                "  the same over the database's window (first start to last update)",
                fmt(win[kind], 1),
                fmt(peer_win, 1),
                ratio(win[kind], peer_win),
                "",
            )
        )
        out.append(
            (
                f"user: CPU ms/job, {what} (workers + beat + db + redis)",
                fmt(cpu[kind]),
                fmt(peer_cpu),
                ratio(cpu[kind], peer_cpu),
                "",
            )
        )
    return out


def lines(user: dict[str, list[UserRun]], top: int) -> list[str]:
    out = ["each run of the user's scenario (timelines under bench/out/):"]
    for runs in user.values():
        out += [f"  {r.line()}; timeline {r.timeline}" for r in runs]
    for runs in user.values():
        for r in runs:
            if r.profile:
                text, _ = summarise_worker_profile(ROOT / r.profile, top)
                out += ["", f"profile of {r.label}'s first worker process ({r.profile}):", text]
    return out
