"""What every `provisioner` subcommand shares: settings, the database, output and amounts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from worker.settings import Settings

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def load_settings(*, check_production: bool = True) -> Settings:
    """The settings of the environment, with logging set up (on stderr: stdout is the
    command's output, one JSON object with `--json`). In production (`PROVISIONER_ENV`), a
    command that opens the database, Redis or the providers exits 2 on the development
    defaults, one line naming each variable (worker/production.py); `check_production=False`
    for the API's clients (onboard, offboard) and the probes, which open none of them."""
    from worker.logging import configure
    from worker.production import refusal_line, refusals

    try:
        settings = Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    found = refusals(settings) if check_production else []
    if found:
        typer.echo(refusal_line(found), err=True)
        raise typer.Exit(2)
    configure(settings.log_format, settings.log_level)
    return settings


def emit(data: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, default=str) if as_json else text)


def database(settings: Settings):  # type: ignore[no-untyped-def]
    from worker.store.db import Database

    return Database(settings.database_url, pool_size=2)


def parse_amount(value: str, name: str) -> int:
    from worker.domain.money import to_cents

    try:
        cents = to_cents(Decimal(value))
    except (InvalidOperation, ValueError) as exc:
        raise typer.BadParameter(f"{value!r} is not an amount like 25.00", param_hint=name) from exc
    if cents < 0:
        raise typer.BadParameter("must not be negative", param_hint=name)
    return cents


def parse_moment(value: str | None, hint: str) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone), or a clear error naming the option."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time like 2027-01-01T00:00:00Z", param_hint=hint
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
