"""`provisioner billing`: the monthly billing pass, on demand (beat runs it on a schedule)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from worker.cli.common import JsonFlag, database, emit, load_settings, parse_moment

app = typer.Typer(no_args_is_help=True, help="Monthly fees and grace periods.")


def run_pass(settings, now: datetime | None = None, account_id: int | None = None):  # type: ignore[no-untyped-def]
    """One billing pass (of one account, after a top-up), its tasks and events published."""
    from worker.app.lifecycle import LifecycleService
    from worker.runtime.celery_app import CeleryPublisher, create_celery

    publisher = CeleryPublisher(create_celery(settings))
    service = LifecycleService(database(settings), settings, publisher)
    return service.billing_pass(now=now, account_id=account_id, events=publisher)


@app.command("run")
def run(
    now: Annotated[
        str | None,
        typer.Option(help="Bill as of this time (ISO 8601, e.g. 2027-01-01T00:00:00Z)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Charge every live contact the months it owes; start, end or expire grace periods."""
    moment = parse_moment(now, "--now")
    result = run_pass(load_settings(), moment).as_dict()
    emit(
        result,
        as_json,
        f"charged {result['charged']} fees; {result['grace_period']} entered grace period, "
        f"{result['restored']} back to active, {result['deleted']} deleted unpaid",
    )
