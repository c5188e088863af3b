"""`provisioner`: the command line of every component and of the operators' tasks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli.billing import app as billing_app
from worker.cli.common import JsonFlag, database, emit, load_settings, parse_amount
from worker.cli.secrets import app as secrets_app
from worker.cli.webhooks import app as webhooks_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
accounts_app = typer.Typer(no_args_is_help=True, help="Accounts and their API keys.")
assistants_app = typer.Typer(no_args_is_help=True, help="Assistants of an account.")
credits_app = typer.Typer(no_args_is_help=True, help="Credits of an account.")
jobs_app = typer.Typer(no_args_is_help=True, help="Provisioning jobs: inspect and retry.")
app.add_typer(accounts_app, name="accounts")
app.add_typer(assistants_app, name="assistants")
app.add_typer(credits_app, name="credits")
app.add_typer(jobs_app, name="jobs")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(billing_app, name="billing")
app.add_typer(secrets_app, name="secrets")

Host = Annotated[str | None, typer.Option(help="Interface to listen on.")]
Port = Annotated[int | None, typer.Option(help="Port to listen on.")]


@app.command()
def migrate(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing: exit 0 if the schema is at this version's head (or newer), "
            "1 if not (yet).",
        ),
    ] = False,
    wait: Annotated[
        float, typer.Option(min=0, help="With --check: keep checking this many seconds.")
    ] = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Create or upgrade the database schema (safe to run repeatedly)."""
    from worker.store.migrate import upgrade

    settings = load_settings()
    db = database(settings)
    if check:
        from worker.store.migrate import wait_for_head

        state = wait_for_head(db, wait)
        emit(state.as_dict(), as_json, state.message)
        raise typer.Exit(0 if state.ready else 1)
    upgrade(db)
    emit({"migrated": True}, as_json, "database is up to date")


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Option(help="Account name.")],
    credits: Annotated[str, typer.Option(help="Opening credits, e.g. 25.00.")] = "0",
    as_json: JsonFlag = False,
) -> None:
    """Create an account and print its API key (shown only this once)."""
    from worker.store import accounts
    from worker.store import credits as credit_store

    cents = parse_amount(credits, "--credits")
    db = database(load_settings())
    with db.write() as session:
        account = accounts.create_account(session, name)
        api_key = accounts.issue_key(session, account.id)
        if cents:
            credit_store.top_up(session, account.id, cents, f"topup:opening:{account.id}")
    emit(
        {"account_id": account.id, "api_key": api_key},
        as_json,
        f"account_id: {account.id}\napi_key: {api_key}  (shown once; store it now)",
    )


@assistants_app.command("create")
def assistants_create(
    account: Annotated[int, typer.Option(help="Owning account id.")],
    name: Annotated[str | None, typer.Option(help="Assistant name.")] = None,
    count: Annotated[int | None, typer.Option(min=1, max=10_000, help="Make K at once.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create assistants; prints the new integer id(s)."""
    from worker.store import accounts

    db = database(load_settings())
    with db.write() as session:
        if not accounts.account_exists(session, account):
            typer.echo(f"no account {account}", err=True)
            raise typer.Exit(1)
        ids = accounts.create_assistants(session, account, name, count or 1)
    if count is None:
        emit({"assistant_id": ids[0]}, as_json, f"assistant_id: {ids[0]}")
    else:
        emit({"assistant_ids": ids}, as_json, "assistant_ids: " + " ".join(map(str, ids)))


@credits_app.command("add")
def credits_add(
    account_id: Annotated[int, typer.Argument(help="Account id.")],
    amount: Annotated[str, typer.Argument(help="Amount, e.g. 10.00.")],
    key: Annotated[
        str | None, typer.Option(help="Idempotency key: a repeated top-up with it is a no-op.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Top up an account's credits."""
    from worker.domain.ids import new_id
    from worker.domain.money import format_amount
    from worker.store import accounts
    from worker.store import credits as credit_store

    cents = parse_amount(amount, "AMOUNT")
    settings = load_settings()
    db = database(settings)
    with db.write() as session:
        if not accounts.account_exists(session, account_id):
            typer.echo(f"no account {account_id}", err=True)
            raise typer.Exit(1)
        applied = credit_store.top_up(session, account_id, cents, f"topup:{key or new_id('tu')}")
    if applied:  # what the account owes is charged now, and its grace periods end
        from worker.cli.billing import run_pass

        run_pass(settings, account_id=account_id)
    with db.read() as session:
        balance = credit_store.balance(session, account_id)
    data = {
        "account_id": account_id,
        "applied": applied,
        "balance": format_amount(balance.balance_cents),
        "available": format_amount(balance.available_cents),
    }
    emit(data, as_json, f"balance: {data['balance']} (available {data['available']})")


@app.command()
def api(
    host: Host = None,
    port: Port = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (each is one event loop and GIL).")
    ] = 1,
) -> None:
    """Serve the HTTP API (uvicorn)."""
    import uvicorn

    from api_stub.app import create_app, serve_threads_promptly
    from worker import tracing
    from worker.logging import configure

    serve_threads_promptly()
    settings = load_settings()
    configure(settings.log_format, settings.log_level)
    if workers == 1:
        tracing.configure(settings, "api")  # (uvicorn's worker processes: in their factory)
    options: dict[str, Any] = {
        "host": host or settings.api_host,
        "port": port or settings.api_port,
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": settings.api_keep_alive_s,
        # uvicorn's records go to the root logger that `configure` set up (JSON lines).
        "log_config": None,
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:
        # Worker processes import the app themselves: uvicorn takes a factory by name.
        uvicorn.run("api_stub.app:app_from_environment", factory=True, workers=workers, **options)


@jobs_app.command("failed")
def jobs_failed(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List failed contacts with their errors, newest first."""
    from worker.app.operations import failed_contacts

    rows = failed_contacts(database(load_settings()), limit)
    if as_json:
        typer.echo(json.dumps({"failed": rows}))
        return
    for row in rows:
        error = row["error"]
        typer.echo(
            f"{row['id']}  assistant {row['assistant_id']}  {row['contact_type']:<8}  "
            f"{error['code']}: {error['message']}"
        )
    if not rows:
        typer.echo("no failed contacts")


@jobs_app.command("stuck")
def jobs_stuck(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List failing or deleting contacts whose clean-up at the providers is stuck, with its
    error and age."""
    from worker.app.operations import stuck_contacts

    rows = stuck_contacts(database(load_settings()), limit)
    if as_json:
        typer.echo(json.dumps({"stuck": rows}))
        return
    for row in rows:
        error = row["error"]
        why = (
            f"deleting: {row['deleted_reason']}"
            if row["status"] == "deleting"
            else f"failing: {error['code']}: {error['message']}"
        )
        typer.echo(
            f"{row['id']}  assistant {row['assistant_id']}  {row['contact_type']:<8}  "
            f"stuck {row['age_s']} s on {row['stuck_reason']}  ({why})"
        )
    if not rows:
        typer.echo("no stuck contacts")


@jobs_app.command("retry")
def jobs_retry(
    contact_id: Annotated[str, typer.Argument(help="A failed contact's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Run a failed contact again (its setup cost is reserved again)."""
    from worker.app.operations import retry_contact
    from worker.domain.errors import DomainError
    from worker.live import Notifier
    from worker.runtime.celery_app import CeleryPublisher, create_celery

    settings = load_settings()
    try:
        result = retry_contact(
            database(settings),
            settings,
            CeleryPublisher(create_celery(settings)),
            contact_id,
            Notifier.from_settings(settings),
        )
    except DomainError as exc:
        typer.echo(f"{exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    emit(result, as_json, f"{contact_id} is pending again (queue {result['queue']})")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Threads running tasks.")] = 16,
    queues: Annotated[str, typer.Option(help="Queues, highest priority first.")] = (
        "interactive,bulk,webhooks"
    ),
    pool: Annotated[str, typer.Option(help="Celery pool: threads (default) or prefork.")] = (
        "threads"
    ),
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing --concurrency (one per core: the GIL holds a "
            "process to one). Above 1 this process only supervises them; each child's "
            "metrics port is PROVISIONER_WORKER_METRICS_PORT + its index.",
        ),
    ] = 1,
    check_alive: Annotated[
        bool,
        typer.Option(
            "--check-alive",
            help="Start nothing: exit 0 if every worker process here beat within "
            "PROVISIONER_WORKER_DEAD_AFTER_S, 1 if not (a container's liveness probe).",
        ),
    ] = False,
) -> None:
    """Run a Celery worker for the provisioning tasks."""
    if check_alive:  # first: a probe imports no more than it needs
        from worker.health import check_workers

        settings = load_settings(check_production=False)
        _verdict(check_workers(settings.var_dir, settings.worker_dead_after_s))
    from worker.logging import configure
    from worker.metrics import serve_worker_metrics
    from worker.providers.credentials import missing_credentials
    from worker.runtime.celery_app import create_celery
    from worker.runtime.tasks import Runtime, register

    settings = load_settings()
    configure(settings.log_format, settings.log_level)
    missing = missing_credentials(settings)
    if missing:
        # Every request to the provider would be refused: say so now, not once per contact.
        typer.echo(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} empty, but the "
            "providers are the real services: set the credentials (or point "
            "PROVISIONER_SANDBOX_URL at a sandbox)",
            err=True,
        )
        raise typer.Exit(2)
    if processes > 1:
        from worker.runtime import worker_group

        try:
            threads = worker_group.split(concurrency, processes)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--concurrency") from exc
        code = worker_group.run(
            threads,
            queues,
            pool,
            settings.worker_metrics_port,
            stop_timeout_s=worker_group.STOP_TIMEOUT_S,
        )
        raise typer.Exit(code)
    from worker import tracing

    tracing.configure(settings, "worker")  # before the runtime makes its engines and clients
    celery = create_celery(settings)
    runtime = Runtime(settings)
    register(celery, runtime)
    runtime.warm_on_start(pool)
    # Metrics of this process: with the threads pool, its tasks run here too (a prefork
    # pool's children count in registries of their own, which this does not serve).
    serve_worker_metrics(settings.worker_metrics_port, settings.worker_metrics_host)
    try:
        # Celery's banner is printed text: not in JSON logs (the ready line says it started).
        quiet = ["--quiet"] if settings.log_format == "json" else []
        celery.worker_main(
            [
                *quiet,
                "worker",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                f"--queues={queues}",
                f"--loglevel={settings.log_level}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    finally:
        runtime.close()


@app.command()
def beat(
    check_alive: Annotated[
        bool,
        typer.Option(
            "--check-alive",
            help="Start nothing: exit 0 if beat here ticked within --max-age, 1 if not "
            "(a container's liveness probe).",
        ),
    ] = False,
    max_age: Annotated[
        float, typer.Option(min=1, help="With --check-alive: the oldest tick still alive (s).")
    ] = 60.0,
) -> None:
    """Run the scheduler: the reconciler and housekeeping (run exactly one per deployment)."""
    from worker import health

    if check_alive:  # first: a probe imports no more than it needs
        settings = load_settings(check_production=False)
        _verdict(health.check_beat(settings.var_dir, max_age))
    from worker.logging import configure
    from worker.redis_conn import RedisTarget
    from worker.runtime.beat import recording_scheduler
    from worker.runtime.beat_health import MAX_INTERVAL_S
    from worker.runtime.celery_app import create_celery

    settings = load_settings()
    configure(settings.log_format, settings.log_level)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    celery = create_celery(settings)
    celery.Beat(
        schedule=str(settings.var_dir / "celerybeat-schedule"),
        scheduler=recording_scheduler(
            RedisTarget.from_settings(settings), health.beat_file(settings.var_dir)
        ),
        max_interval=MAX_INTERVAL_S,
        loglevel=settings.log_level,
        quiet=settings.log_format == "json",  # its banner is printed text
    ).run()


def _verdict(verdict: Any) -> None:
    """A probe's answer: its message, and exit 0 (alive) or 1."""
    typer.echo(verdict.message, err=not verdict.alive)
    raise typer.Exit(0 if verdict.alive else 1)


@app.command()
def dev() -> None:
    """The whole stack on this machine until Ctrl-C (`make run`): embedded Redis, SQLite under
    var/, the provider sandbox, API, worker and beat, and a demo account."""
    from worker.cli.devstack import main as run_dev_stack
    from worker.production import PRODUCTION

    if load_settings(check_production=False).env == PRODUCTION:
        typer.echo("PROVISIONER_ENV=production: `provisioner dev` is for development", err=True)
        raise typer.Exit(2)
    run_dev_stack()


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8900,
    inventory: Annotated[int, typer.Option(help="Numbers per country.")] = 10_000,
) -> None:
    """Serve the provider sandbox (Twilio and Google emulators) for tests and the dev stack."""
    from sandbox.app import serve

    serve(host, port, inventory)


@app.command()
def onboard(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")
    ],
    api_url: Annotated[
        str | None, typer.Option(help="The API's base URL [PROVISIONER_API_URL].")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key; better in PROVISIONER_API_KEY (not in ps).")
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1, max=1000, help="Rows per batch.")] = 500,
    results: Annotated[
        Path | None, typer.Option(help="Results CSV [default: FILE.results.csv].")
    ] = None,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between status polls.")] = 1.0,
) -> None:
    """Onboard contacts from a CSV (assistant_id and the body fields); safe to re-run."""
    from worker.cli.onboard import run_onboard

    url, key = _api_target(api_url, api_key)
    results = results or file.with_name(f"{file.stem}.results.csv")
    raise typer.Exit(
        run_onboard(file, url, key, chunk_size=chunk_size, results_path=results, poll_s=poll)
    )


@app.command()
def offboard(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")
    ],
    api_url: Annotated[
        str | None, typer.Option(help="The API's base URL [PROVISIONER_API_URL].")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key; better in PROVISIONER_API_KEY (not in ps).")
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="Results CSV [default: FILE.offboard.csv].")
    ] = None,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between status polls.")] = 1.0,
) -> None:
    """Delete the contacts a CSV names (assistant_id, and contact_id or contact_type); safe to
    re-run. onboard's results file works as it is."""
    from worker.cli.offboard import run_offboard

    url, key = _api_target(api_url, api_key)
    results = results or file.with_name(f"{file.stem}.offboard.csv")
    raise typer.Exit(run_offboard(file, url, key, results_path=results, poll_s=poll))


def _api_target(api_url: str | None, api_key: str | None) -> tuple[str, str]:
    """Where the API is and the key to call it with, from the options or the settings."""
    settings = load_settings(check_production=False)  # a client of the API, nothing more
    key = api_key or settings.api_key.get_secret_value()
    if not key:
        raise typer.BadParameter(
            "give --api-key or set PROVISIONER_API_KEY", param_hint="--api-key"
        )
    return api_url or settings.api_url or f"http://{settings.api_host}:{settings.api_port}", key


def main() -> None:
    app(prog_name="provisioner")


if __name__ == "__main__":
    sys.exit(main())
