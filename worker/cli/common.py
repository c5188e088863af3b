"""What every `provisioner` subcommand shares: settings, the database, output and amounts."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from worker.settings import Settings

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


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
