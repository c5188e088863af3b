"""`provisioner onboard`: many contacts from one CSV file through the batch API, with a live
progress bar and a results file; safe to re-run after any interruption.

Every row is checked before anything is sent. Each chunk of rows goes out with an
Idempotency-Key made from the file's content and the chunk's place, so a re-run replays the
chunks already accepted (same batch, same contacts) instead of creating them again. A row whose
assistant already has a live contact of its type reports that contact.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from api_stub.client import (
    TERMINAL,
    ApiError,
    AsyncClient,
    Batch,
    BatchStatus,
    Contact,
    ContactExists,
)
from worker.cli.onboard_csv import (
    BadFile,
    RowResult,
    check,
    chunk_key,
    chunks,
    count_rows,
    file_digest,
    items,
    write_results,
)

# grace_period: active, its month's fee unpaid (the credits ran out); deleting and deleted:
# someone deleted it meanwhile.
CONTACT_STATUSES = (
    "pending",
    "provisioning",
    "active",
    "grace_period",
    "failed",
    "deleting",
    "deleted",
)
STATUSES = (*CONTACT_STATUSES, "rejected")  # rejected: the API made no contact for the row
LIVE = ("pending", "provisioning", "active", "grace_period", "deleting")
PROVISIONED = ("active", "grace_period")
COLLECTORS = 4  # batches whose contacts are collected at once
PAGE = 100  # contacts per page when looking for an assistant's existing contact
BATCH_PAGE = 1000  # contacts per page of a batch's contacts (the route's maximum)

# Exit codes.
OK = 0  # every row has an active contact
BAD_INPUT = 1  # nothing was sent
API_REFUSED = 2  # the API refused a whole chunk (a wrong key, a body too large); re-run safely
SOME_FAILED = 3  # finished; some rows failed or were rejected (see the results file)
INTERRUPTED = 130


@dataclass(frozen=True)
class Summary:
    rows: int
    by_status: dict[str, int]
    existing: int
    results: Path

    @property
    def exit_code(self) -> int:
        provisioned = sum(self.by_status.get(s, 0) for s in PROVISIONED)
        return OK if provisioned == self.rows else SOME_FAILED

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.by_status.items() if n)
        existing = f" ({self.existing} already existed)" if self.existing else ""
        return f"{self.rows} rows: {counts}{existing}. Results: {self.results}"


class _Rate(ProgressColumn):
    """Rows per second, on the bars that carry `timed`."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("timed") or not task.speed:
            return Text("")
        return Text(f"{task.speed:,.1f}/s", style="progress.data.speed")


class _Eta(TimeRemainingColumn):
    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("timed") else Text("")


class Onboarding:
    """One run over one file: submit its chunks, follow the batches, collect the results."""

    def __init__(
        self,
        client: AsyncClient,
        path: Path,
        *,
        rows: int,
        chunk_size: int,
        poll_s: float = 1.0,
        console: Console | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.rows = rows
        self.chunk_size = chunk_size
        self.poll_s = poll_s
        self.console = console or Console(stderr=True)
        self.results: list[RowResult] = []
        self.spans: dict[str, tuple[int, int]] = {}  # batch id -> its rows in `results`
        self.batches: dict[str, BatchStatus] = {}  # the last status polled of each batch
        self.submitted = False

    async def run(self) -> list[RowResult]:
        progress = Progress(
            TextColumn("{task.description:>12}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            _Eta(),
            console=self.console,
            refresh_per_second=4,
        )
        with progress:
            self._bars = {
                name: progress.add_task(name, total=self.rows, timed=name in ("sent", "done"))
                for name in ("sent", *STATUSES, "done")
            }
            self._progress = progress
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._submit())
                    group.create_task(self._follow())
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            await self._collect()
            self._show()
        return self.results

    # --- submitting ----------------------------------------------------------------------------

    async def _submit(self) -> None:
        digest = file_digest(self.path)
        try:
            for index, chunk in enumerate(chunks(items(self.path), self.chunk_size)):
                batch = await self.client.create_batch(
                    [item.body for item in chunk],
                    idempotency_key=chunk_key(digest, self.chunk_size, index),
                )
                results = [RowResult(i.row, i.assistant_id, i.contact_type) for i in chunk]
                await self._record(batch, results)
                self.spans[batch.batch_id] = (len(self.results), len(self.results) + len(chunk))
                self.results.extend(results)
                self._progress.update(self._bars["sent"], completed=len(self.results))
                self._show()
        finally:
            self.submitted = True

    async def _record(self, batch: Batch, results: list[RowResult]) -> None:
        for accepted in batch.accepted:
            result = results[accepted.index]
            result.outcome, result.contact_id, result.status = "created", accepted.contact_id, ""
        existing = []
        for rejected in batch.rejected:
            result = results[rejected.index]
            result.outcome, result.status = "rejected", "rejected"
            result.error_code, result.error_message = rejected.error.code, rejected.error.message
            if rejected.error.code == ContactExists.code:
                existing.append(result)
        await asyncio.gather(*(self._adopt_existing(result) for result in existing))

    async def _adopt_existing(self, result: RowResult) -> None:
        """Report the assistant's live contact of the row's type, if it (still) has one."""
        after = None
        while True:
            page = await self.client.list_contacts(
                result.assistant_id, limit=PAGE, starting_after=after
            )
            for contact in page:
                if contact.contact_type == result.contact_type and contact.status in LIVE:
                    result.outcome, result.error_code, result.error_message = "existing", "", ""
                    _fill(result, contact)
                    return
            if len(page) < PAGE:
                return
            after = page[-1].id

    # --- following -----------------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            open_batches = [b for b in self.spans if not self._done(b)]
            statuses = await asyncio.gather(*(self.client.get_batch(b) for b in open_batches))
            for status in statuses:
                self.batches[status.batch_id] = status
            open_existing = [
                r for r in self.results if r.outcome == "existing" and r.status not in TERMINAL
            ]
            await self._refresh(open_existing)
            self._show()
            if self.submitted and all(self._done(b) for b in self.spans) and not open_existing:
                return
            await asyncio.sleep(self.poll_s)

    def _done(self, batch_id: str) -> bool:
        status = self.batches.get(batch_id)
        return status is not None and status.done

    def _counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for batch in self.batches.values():
            counts.update({s: n for s, n in batch.counts.items() if s in CONTACT_STATUSES})
        for result in self.results:
            if result.outcome != "created":
                counts[result.status] += 1
        # Rows of a chunk just accepted, before their batch has been polled, are pending.
        polled = sum(counts.values())
        counts["pending"] += max(0, len(self.results) - polled)
        return counts

    def _show(self) -> None:
        counts = self._counts()
        for name in STATUSES:
            self._progress.update(self._bars[name], completed=counts[name])
        done = sum(counts[s] for s in ("active", "grace_period", "failed", "deleted", "rejected"))
        self._progress.update(self._bars["done"], completed=done)

    # --- collecting ----------------------------------------------------------------------------

    async def _collect(self) -> None:
        """Fill in each created row's final status and address, a page of its batch's
        contacts at a time."""
        created = sum(1 for r in self.results if r.outcome == "created")
        bar = self._progress.add_task("results", total=created, timed=True)
        # A few collectors share one iterator over the batches; each holds one batch's rows.
        spans = iter(self.spans.items())

        async def collector() -> None:
            for batch_id, (start, end) in spans:
                rows = {r.contact_id: r for r in self.results[start:end] if r.outcome == "created"}
                after = None
                while rows:
                    page = await self.client.list_batch_contacts(
                        batch_id, limit=BATCH_PAGE, starting_after=after
                    )
                    for contact in page:
                        if (result := rows.pop(contact.id, None)) is not None:
                            _fill(result, contact)
                            self._progress.advance(bar)
                    if len(page) < BATCH_PAGE:
                        break
                    after = page[-1].id
                await self._refresh(rows.values())  # none, unless the batch lost one

        await asyncio.gather(*(collector() for _ in range(COLLECTORS)))

    async def _refresh(self, results: Iterable[RowResult]) -> None:
        for result in list(results):
            _fill(result, await self.client.get_contact(result.assistant_id, result.contact_id))


def _fill(result: RowResult, contact: Contact) -> None:
    result.contact_id, result.status = contact.id, contact.status
    result.address = contact.address or ""
    if contact.error is not None:
        result.error_code, result.error_message = contact.error.code, contact.error.message


def summarise(results: list[RowResult], results_path: Path) -> Summary:
    by_status = Counter(r.status for r in results)
    return Summary(
        rows=len(results),
        by_status={s: by_status[s] for s in STATUSES if by_status[s]},
        existing=sum(1 for r in results if r.outcome == "existing"),
        results=results_path,
    )


async def onboard(
    path: Path,
    api_url: str,
    api_key: str,
    *,
    rows: int,
    chunk_size: int,
    results_path: Path,
    poll_s: float = 1.0,
    console: Console | None = None,
) -> Summary:
    """Onboard a checked file and write its results file; raises ApiError if the API refuses
    a whole chunk (a wrong key, a body too large)."""
    async with AsyncClient(api_url, api_key) as client:
        run = Onboarding(
            client, path, rows=rows, chunk_size=chunk_size, poll_s=poll_s, console=console
        )
        results = await run.run()
    results.sort(key=lambda r: r.row)
    write_results(results_path, results)
    return summarise(results, results_path)


def run_onboard(
    path: Path,
    api_url: str,
    api_key: str,
    *,
    chunk_size: int,
    results_path: Path,
    poll_s: float = 1.0,
) -> int:
    """`provisioner onboard`: check the whole file, then onboard it; returns the exit code."""
    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    try:
        bad = 0
        for problem in check(path):
            bad += 1
            err.print(f"row {problem.row}: {problem.message}", markup=False, highlight=False)
        rows = count_rows(path) if not bad else 0
    except BadFile as exc:
        err.print(f"{path}: {exc}", markup=False, highlight=False)
        return BAD_INPUT
    if bad:
        err.print(f"{bad} bad row(s) in {path}; nothing was sent.", markup=False)
        return BAD_INPUT
    if not rows:
        err.print(f"{path} has no rows; nothing to do.", markup=False)
        return OK
    try:
        summary = asyncio.run(
            onboard(
                path,
                api_url,
                api_key,
                rows=rows,
                chunk_size=chunk_size,
                results_path=results_path,
                poll_s=poll_s,
                console=err,
            )
        )
    except KeyboardInterrupt:
        err.print("interrupted: re-run the same command to resume; nothing is created twice.")
        return INTERRUPTED
    except (ApiError, httpx.HTTPError) as exc:
        err.print(f"the API refused the onboarding: {exc}", markup=False, highlight=False)
        return API_REFUSED
    out.print(str(summary), markup=False, highlight=False)
    return summary.exit_code


__all__ = ["Onboarding", "Summary", "onboard", "run_onboard"]
