"""`provisioner webhooks`: operators' commands for webhook deliveries."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Webhook deliveries: send again.")


@app.command("redrive")
def redrive(
    failed: Annotated[
        bool,
        typer.Option(
            "--failed",
            help="Only deliveries that failed (else also those that succeeded or had no endpoint).",
        ),
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="Only deliveries created at or after this ISO time.")
    ] = None,
    account: Annotated[int | None, typer.Option(help="Only this account's deliveries.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Send deliveries again: a new round of the retry schedule, the same webhook-id."""
    from worker.app.webhooks import WebhookService
    from worker.cli.common import database, load_settings, parse_moment
    from worker.runtime.celery_app import DELIVER_WEBHOOK_TASK, WEBHOOK_QUEUE, create_celery

    moment = parse_moment(since, "--since")
    settings = load_settings()
    db = database(settings)
    event_ids = WebhookService(db, settings).redrive(
        failed_only=failed, since=moment, account_id=account
    )
    # Published after the commit; any publish lost here is picked up by beat's relay.
    celery = create_celery(settings)
    for event_id in event_ids:
        celery.send_task(DELIVER_WEBHOOK_TASK, args=[event_id], queue=WEBHOOK_QUEUE)
    db.dispose()
    if as_json:
        typer.echo(json.dumps({"redriven": len(event_ids), "event_ids": event_ids}))
    else:
        typer.echo(f"{len(event_ids)} deliveries will be sent again")
