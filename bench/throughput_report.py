"""What throughput.py prints: its tables, the RSS run, the profiles, and the verdicts.

`report` turns the runs into the printed text and the saved JSON's figures; `main_table` and
`context_table` are the two tables (a row per run), `rss_report` the long run's memory, and
`verdicts` what was (not) met.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from measure import fmt, summarise_worker_profile, table
from stack import OUT, ROOT
from worker_run import RunResult


def main_table(results: list[RunResult]) -> str:
    head = [
        "run",
        "C",
        "jobs/s",
        "calls/job",
        "I/O bound",
        "worker ms",
        "db ms",
        "redis ms",
        "CPU ms/job",
        "CPU bound",
        "ratio",
        "statuses",
    ]
    rows = [head]
    for r in results:
        rows.append(
            [
                r.label,
                str(r.concurrency),
                f"{r.jobs_per_s:.1f}",
                f"{r.calls_per_job:.2f}",
                f"{r.io_bound:.0f}",
                fmt(r.cpu_ms("worker")),
                fmt(r.cpu_ms("db")),
                fmt(r.cpu_ms("redis")),
                f"{r.cpu_total_ms:.2f}",
                f"{r.cpu_bound:.0f}",
                f"{r.ratio:.2f}",
                " ".join(f"{k}={v}" for k, v in r.statuses.items()),
            ]
        )
    return table(rows)


def context_table(results: list[RunResult]) -> str:
    head = [
        "run",
        "elapsed s",
        "xacts/job",
        "worker usr/sys ms",
        "worker cores",
        "db backends/shared ms",
        "sandbox ms",
        "bench ms",
        "machine busy",
        "others' load",
        "cores left",
        "ratio on cores left",
        "non-2xx",
    ]
    rows = [head]
    for r in results:
        secs = r.cpu.get("seconds") or 0.0
        busy = r.cpu.get("machine_busy")
        ours = sum(r.cpu.get(k) or 0.0 for k in ("worker", "db", "redis", "sandbox", "bench"))
        non2xx = {k: v for k, v in r.by_status.items() if not k.startswith("2")}
        rows.append(
            [
                r.label,
                f"{r.elapsed_s:.2f}",
                fmt(r.xacts_per_job),
                f"{fmt(r.cpu_ms('worker_user'))}/{fmt(r.cpu_ms('worker_system'))}",
                fmt((r.cpu.get("worker") or 0.0) / secs if secs else None),
                f"{fmt(r.cpu_ms('db_backends'))}/{fmt(r.cpu_ms('db_shared'))}",
                fmt(r.cpu_ms("sandbox")),
                fmt(r.cpu_ms("bench")),
                f"{busy / secs:.2f} cores" if busy is not None and secs else "-",
                f"{(busy - ours) / secs:.2f} cores" if busy is not None and secs else "-",
                fmt(r.cores_left),
                fmt(r.ratio_left),
                json.dumps(non2xx) if non2xx else "none",
            ]
        )
    return table(rows)


def rss_report(r: RunResult) -> tuple[str, dict[str, Any]]:
    if not r.rss:
        return "no RSS samples", {}
    warm_at = 0.1 * r.jobs
    warm = next(((t, d, b) for t, d, b in r.rss if d >= warm_at), r.rss[0])
    after = [s for s in r.rss if s[0] >= warm[0]]
    peak = max(after, key=lambda s: s[2])
    growth = 100 * (peak[2] - warm[2]) / warm[2]
    mib = lambda b: b / 2**20  # noqa: E731
    lines = [
        f"worker RSS, concurrency {r.concurrency}, {r.jobs} jobs at {r.latency_ms:g} ms latency "
        f"({r.jobs_per_s:.0f} jobs/s, {len(r.rss)} samples, one a second):",
        f"  after warm-up ({warm[1]} jobs done, {warm[0]:.0f} s): {mib(warm[2]):.1f} MiB",
        f"  peak after warm-up ({peak[1]} jobs done, {peak[0]:.0f} s): {mib(peak[2]):.1f} MiB",
        f"  growth: {growth:+.1f}% "
        + ("(flat: under 10%)" if growth < 10 else "(NOT flat: 10% or more)"),
        f"  final: {mib(r.rss[-1][2]):.1f} MiB"
        + (f"; lifetime high-water mark (VmHWM): {mib(r.rss_hwm):.1f} MiB" if r.rss_hwm else ""),
    ]
    marks = []
    for tenth in range(1, 11):
        sample = next((s for s in r.rss if s[1] >= tenth * r.jobs / 10), None)
        if sample:
            marks.append(f"{tenth * 10}%: {mib(sample[2]):.1f}")
    lines.append("  RSS (MiB) by jobs done: " + ", ".join(marks))
    data = {
        "warm_rss": warm[2],
        "peak_rss": peak[2],
        "growth_pct": growth,
        "final_rss": r.rss[-1][2],
        "hwm": r.rss_hwm,
    }
    return "\n".join(lines), data


def verdicts(results: list[RunResult]) -> list[str]:
    out = []
    for r in results:
        bad = {k: v for k, v in r.statuses.items() if k not in ("active", "done")}
        if bad or r.error:
            out.append(
                f"!!! {r.label}: NOT ALL JOBS SUCCEEDED: {r.statuses} {r.error or ''}".rstrip()
            )
    for r in results:
        if r.label.startswith("c"):
            out.append(
                f"{r.label}: ratio {r.ratio:.2f} of min(I/O {r.io_bound:.0f}, CPU "
                f"{r.cpu_bound:.0f}) -> target 0.8 {'met' if r.ratio >= 0.8 else 'NOT met'}"
            )
    return out


def report(
    args: argparse.Namespace,
    stamp: str,
    results: list[RunResult],
    raws: list[RunResult],
    profiled: RunResult | None,
    rss_run: RunResult | None,
    sql: dict[str, float],
) -> tuple[list[str], dict[str, Any]]:
    """The text to print, and the figures beyond the runs' own for the saved JSON."""
    saved: dict[str, Any] = {}
    text: list[str] = [""]
    text.append(
        f"Worker pipeline throughput: {args.jobs} phone contacts per run, sandbox latency "
        f"{args.latency_ms:g} ms, {os.cpu_count()} cores; CPU ms/job = worker + db + redis "
        f"(sandbox excluded)"
    )
    shown = results + raws + ([profiled] if profiled else [])
    if shown:
        text.append(main_table(shown))
        text.append("")
        text.append(
            "context (CPU ms per job unless stated; 'machine busy': all processes, in cores; "
            "'others' load': busy minus the parties of the bench, i.e. other people's work "
            "(other databases' backends included); "
            "'cores left': cores minus others' load, sandbox and bench)"
        )
        text.append(context_table(shown))
        text.append("")
        text += verdicts(shown)
    traced = [r for r in shown if r.phases]
    if traced:
        from phases import describe

        text.append("")
        text.append(
            "where a task's wall time goes (bench/phases.py; mean ms per phase, in order; "
            "'python' is the task's own code between two waits; slots busy: worker threads "
            "inside a task, averaged over the run):"
        )
        for r in traced:
            text.append(f"  {r.label}: {describe(r.phases)}")
    waited = [r for r in shown if r.db_waits and r.db_polls]
    if waited:
        text.append("")
        text.append(
            "PostgreSQL: the bench database's active backends per poll (5 a second), "
            "by what they wait on:"
        )
        for r in waited:
            top = sorted(r.db_waits.items(), key=lambda kv: -kv[1])[:5]
            text.append(
                f"  {r.label}: " + ", ".join(f"{name} {n / r.db_polls:.1f}" for name, n in top)
            )
    if raws and results:
        text.append("")
        for r in results:
            raw = next((x for x in raws if x.concurrency == r.concurrency), None)
            if r.processes != 1:
                continue
            if raw and raw.jobs_per_s:
                text.append(
                    f"c{r.concurrency}: pipeline {r.jobs_per_s:.1f} jobs/s = "
                    f"{r.jobs_per_s / raw.jobs_per_s:.2f} of the raw ceiling "
                    f"{raw.jobs_per_s:.1f} jobs/s (raw worker {fmt(raw.cpu_ms('worker'))} "
                    f"CPU ms/job vs pipeline worker {fmt(r.cpu_ms('worker'))})"
                )
    if profiled:
        text.append("")
        text.append(
            f"profile-c{profiled.concurrency} ran under py-spy ({args.profile_rate} Hz, "
            "--nonblocking): its figures are depressed by sampling"
        )
    if sql:
        text.append("")
        text.append(
            "in-process pipeline (no Celery, one contact at a time, no latency), per job: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sql.items())
        )
    if rss_run:
        text.append("")
        rss_text, rss_data = rss_report(rss_run)
        text.append(rss_text)
        text += [v for v in verdicts([rss_run]) if v.startswith("!!!")]
        saved["rss"] = rss_data
    inprocess = OUT / f"profile-{stamp}-inprocess.txt"
    if args.profile and inprocess.exists():
        summary, data = summarise_worker_profile(inprocess, args.top)
        text.append("")
        text.append(
            f"profile of the in-process pipeline, no Celery ({inprocess.relative_to(ROOT)}):"
        )
        text.append(summary)
        saved["profile_inprocess"] = data
    if profiled and profiled.profile:
        summary, data = summarise_worker_profile(Path(profiled.profile), args.top)
        text.append("")
        text.append(f"profile of the worker ({Path(profiled.profile).relative_to(ROOT)}):")
        text.append(summary)
        saved["profile"] = data
    return text, saved
