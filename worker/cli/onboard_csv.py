"""The onboarding CSV: its columns, the check of every row, its chunks and their keys, and the
results file. Streams the file; nothing here talks to the API."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from worker.domain.errors import InvalidRequest
from worker.domain.validation import BODY_FIELDS, validate_contact_request

COLUMNS = ("assistant_id", *BODY_FIELDS)
REQUIRED = ("assistant_id", "contact_type")
MAX_ASSISTANT_ID = 2**63 - 1
MAX_CHUNK_ITEMS = 1000  # the batch route's limit
# A chunk also closes before its JSON body would pass this many bytes, well under the batch
# route's body limit (1 MiB by default) whatever the rows hold.
MAX_CHUNK_BYTES = 512 * 1024


class BadFile(Exception):
    """The file cannot be onboarded at all (unreadable, not CSV, wrong columns)."""


@dataclass(frozen=True, slots=True)
class BadRow:
    row: int  # the line number in the file, the header being line 1
    message: str


@dataclass(frozen=True, slots=True)
class Item:
    """One valid row, as the batch route takes it."""

    row: int
    assistant_id: int
    contact_type: str
    body: dict[str, Any]  # {"assistant_id", "contact_type", ...the non-empty fields}


@dataclass(slots=True)
class RowResult:
    """What became of one row: the results file's line. Kept for every row, so it stays small."""

    row: int
    assistant_id: int
    contact_type: str
    outcome: str = ""  # created | existing | rejected
    contact_id: str = ""
    status: str = ""  # the contact's status; `rejected` when no contact was made
    address: str = ""
    error_code: str = ""
    error_message: str = ""


RESULT_COLUMNS = tuple(f.name for f in fields(RowResult))


def file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every data row; checks the header first."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            _check_header(header)
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadFile(f"{path} is not a UTF-8 CSV file: {exc}") from exc


def _check_header(header: list[str]) -> None:
    if not header:
        raise BadFile("the file is empty: expected a header line with " + ", ".join(REQUIRED))
    missing = [name for name in REQUIRED if name not in header]
    unknown = [name for name in header if name not in COLUMNS]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    problems = []
    if missing:
        problems.append("missing column(s): " + ", ".join(missing))
    if unknown:
        problems.append("unknown column(s): " + ", ".join(unknown))
    if duplicated:
        problems.append("repeated column(s): " + ", ".join(duplicated))
    if problems:
        raise BadFile("; ".join(problems) + ". Columns are: " + ", ".join(COLUMNS))


def _item(line: int, row: dict[str, str]) -> Item:
    """The row as a batch item, judged by the same rules as the API; raises InvalidRequest."""
    if None in row:  # csv.DictReader puts surplus cells under the key None
        raise InvalidRequest(
            "too many cells", {"row": f"has more cells than the header's {len(COLUMNS)}"}
        )
    cells = {name: (value or "").strip() for name, value in row.items()}
    errors: dict[str, str] = {}
    assistant = cells.get("assistant_id", "")
    assistant_id = int(assistant) if assistant.isdigit() else 0
    if not 0 < assistant_id <= MAX_ASSISTANT_ID:
        errors["assistant_id"] = "must be a positive whole number"
    fields_given = {name: cells[name] for name in BODY_FIELDS if cells.get(name)}
    try:
        request = validate_contact_request(fields_given)
    except InvalidRequest as exc:
        errors.update(exc.fields or {})
    if errors:
        raise InvalidRequest("invalid row", errors)
    body = {"assistant_id": assistant_id, **fields_given}
    return Item(line, assistant_id, request.contact_type.value, body)


def check(path: Path) -> Iterator[BadRow]:
    """Every row the API would refuse for its content, and every repeat of an assistant and
    contact type already asked for above it (it could only meet `contact_exists`)."""
    first_row: dict[tuple[int, str], int] = {}
    for line, row in _rows(path):
        try:
            item = _item(line, row)
        except InvalidRequest as exc:
            detail = "; ".join(f"{name}: {why}" for name, why in sorted((exc.fields or {}).items()))
            yield BadRow(line, detail)
            continue
        key = (item.assistant_id, item.contact_type)
        if key in first_row:
            yield BadRow(
                line,
                f"assistant {item.assistant_id} already gets a {item.contact_type} contact "
                f"from row {first_row[key]}",
            )
        else:
            first_row[key] = line


def count_rows(path: Path) -> int:
    return sum(1 for _ in _rows(path))


def items(path: Path) -> Iterator[Item]:
    """The rows of a file that `check` found clean."""
    for line, row in _rows(path):
        yield _item(line, row)


def chunks(all_items: Iterable[Item], max_items: int) -> Iterator[list[Item]]:
    """Consecutive runs of at most `max_items` items whose JSON body stays under
    MAX_CHUNK_BYTES. The same file and `max_items` always give the same chunks."""
    chunk: list[Item] = []
    size = len(b'{"items":[]}')
    for item in all_items:
        item_size = len(orjson.dumps(item.body)) + 1
        if chunk and (len(chunk) >= max_items or size + item_size > MAX_CHUNK_BYTES):
            yield chunk
            chunk, size = [], len(b'{"items":[]}')
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def chunk_key(digest: str, max_items: int, index: int) -> str:
    """The Idempotency-Key of a chunk: a re-run of the same file replays instead of creating."""
    return f"onboard-{digest[:32]}-{max_items}-{index}"


def write_results(path: Path, results: Iterable[RowResult]) -> None:
    """Write the results file whole or not at all (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS)
        writer.writerows(astuple(result) for result in results)
    os.replace(temporary, path)
