"""`provisioner offboard`: delete many contacts named in a CSV through the API, with a progress
bar and a results file; safe to re-run (a DELETE repeated answers the contact as it is).

A row names its contact by `assistant_id` and `contact_id`, or by `assistant_id` and
`contact_type` (the assistant's live contact of that type; on a re-run, the one deleted last).
Other columns are ignored, so `provisioner onboard`'s results file offboards as it is.
"""

from __future__ import annotations

import asyncio
import csv
import os
from collections import Counter
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from api_stub.client import ApiError, AsyncClient, Contact, NotFound
from worker.domain.contacts import ContactType
from worker.domain.ids import is_id

LIVE = ("pending", "provisioning", "active", "grace_period", "deleting")
DONE = ("deleted", "failed")
PAGE = 100
CONCURRENCY = 16

OK, BAD_INPUT, API_REFUSED, SOME_LEFT, INTERRUPTED = 0, 1, 2, 3, 130


class BadFile(Exception):
    """The file cannot be offboarded at all (unreadable, no usable columns)."""


@dataclass(slots=True)
class Row:
    """One row and what became of its contact: the results file's line."""

    row: int
    assistant_id: int
    contact_type: str = ""
    contact_id: str = ""
    outcome: str = ""  # deleted | failed (it never held anything) | not_found | error
    status: str = ""
    deleted_reason: str = ""
    error: str = ""


def read(path: Path) -> tuple[list[Row], list[str]]:
    """The rows, and a message for every row that names no contact."""
    rows, problems = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = {name.strip() for name in reader.fieldnames or []}
            if "assistant_id" not in header or not header & {"contact_id", "contact_type"}:
                raise BadFile(
                    "columns needed: assistant_id, and contact_id or contact_type "
                    "(other columns are ignored)"
                )
            for record in reader:
                cells = {(k or "").strip(): (v or "").strip() for k, v in record.items()}
                line = reader.line_num
                assistant, contact_id = cells.get("assistant_id", ""), cells.get("contact_id", "")
                kind = cells.get("contact_type", "")
                if not assistant.isdigit() or not 0 < int(assistant) < 2**63:
                    problems.append(f"row {line}: assistant_id must be a positive whole number")
                elif contact_id and not is_id("ct", contact_id):
                    problems.append(f"row {line}: contact_id {contact_id!r} is not a contact id")
                elif not contact_id and kind not in {t.value for t in ContactType}:
                    problems.append(
                        f"row {line}: give a contact_id, or a contact_type of "
                        "phone, email or whatsapp"
                    )
                else:
                    rows.append(Row(line, int(assistant), kind, contact_id))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadFile(f"{path} is not a UTF-8 CSV file: {exc}") from exc
    return rows, problems


async def _find(client: AsyncClient, row: Row) -> Contact | None:
    """The assistant's live contact of the row's type, else the one of that type deleted last."""
    after, deleted = None, None
    while True:
        page = await client.list_contacts(row.assistant_id, limit=PAGE, starting_after=after)
        for contact in page:
            if contact.contact_type != row.contact_type:
                continue
            if contact.status in LIVE:
                return contact
            if contact.status == "deleted":
                deleted = contact  # ids are time-ordered: the last one seen is the newest
        if len(page) < PAGE:
            return deleted
        after = page[-1].id


def _fill(row: Row, contact: Contact) -> None:
    row.contact_id, row.contact_type, row.status = contact.id, contact.contact_type, contact.status
    row.deleted_reason = contact.deleted_reason or ""
    if contact.status in DONE:
        row.outcome = "deleted" if contact.status == "deleted" else "failed"


async def _offboard(client: AsyncClient, row: Row, poll_s: float, gate: asyncio.Semaphore) -> None:
    async with gate:
        try:
            if not row.contact_id:
                found = await _find(client, row)
                if found is None:
                    row.outcome, row.error = "not_found", "no such contact for this assistant"
                    return
                row.contact_id = found.id
            contact = await client.delete_contact(row.assistant_id, row.contact_id)
        except NotFound as exc:
            row.outcome, row.error = "not_found", exc.message
            return
        except ApiError as exc:
            row.outcome, row.error = "error", f"{exc.code}: {exc.message}"
            return
    _fill(row, contact)
    while row.status not in DONE:
        await asyncio.sleep(poll_s)
        _fill(row, await client.get_contact(row.assistant_id, row.contact_id))


async def offboard(
    rows: list[Row], api_url: str, api_key: str, *, poll_s: float, console: Console
) -> None:
    progress = Progress(
        TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), console=console
    )
    gate = asyncio.Semaphore(CONCURRENCY)
    async with AsyncClient(api_url, api_key) as client:
        with progress:
            bar = progress.add_task("offboarded", total=len(rows))

            async def one(row: Row) -> None:
                await _offboard(client, row, poll_s, gate)
                progress.advance(bar)

            try:
                async with asyncio.TaskGroup() as group:
                    for row in rows:
                        group.create_task(one(row))
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None


def write_results(path: Path, rows: list[Row]) -> None:
    """Whole or not at all: a temporary file renamed over it."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(Row)])
        writer.writerows(astuple(row) for row in rows)
    os.replace(temporary, path)


def run_offboard(
    path: Path, api_url: str, api_key: str, *, results_path: Path, poll_s: float = 1.0
) -> int:
    """`provisioner offboard`: check the whole file, then delete; returns the exit code."""
    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    try:
        rows, problems = read(path)
    except BadFile as exc:
        err.print(f"{path}: {exc}", markup=False, highlight=False)
        return BAD_INPUT
    for problem in problems:
        err.print(problem, markup=False, highlight=False)
    if problems:
        err.print(f"{len(problems)} bad row(s) in {path}; nothing was sent.", markup=False)
        return BAD_INPUT
    try:
        asyncio.run(offboard(rows, api_url, api_key, poll_s=poll_s, console=err))
    except KeyboardInterrupt:
        err.print("interrupted: re-run the same command to resume; a DELETE repeats safely.")
        return INTERRUPTED
    except (ApiError, httpx.HTTPError) as exc:
        err.print(f"the API refused the offboarding: {exc}", markup=False, highlight=False)
        return API_REFUSED
    write_results(results_path, rows)
    counts = Counter(row.outcome for row in rows)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    out.print(
        f"{len(rows)} rows: {summary}. Results: {results_path}", markup=False, highlight=False
    )
    # A failed contact holds nothing at the providers: it counts as gone.
    return OK if counts["deleted"] + counts["failed"] == len(rows) else SOME_LEFT
