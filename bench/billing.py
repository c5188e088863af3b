"""How long a monthly billing pass takes over many live contacts, against the pass a team
writes first (the peer), on the same PostgreSQL database contents.

Seeds `--contacts` active contacts over `--accounts` accounts, paid through last month, then
times:

- ours: `LifecycleService.billing_pass` as beat runs it (per account: one transaction under
  the account's row lock, fees inserted together with ON CONFLICT DO NOTHING, contacts updated
  together; chunks of 5,000 contacts);
- the peer: the original service's levy as a team would write it with the same packages: per
  contact, one transaction that locks its account row, checks the credits, inserts the fee row
  and updates the balance and the contact;
- ours again for the same month (nothing owed: the cost of a pass that finds nothing).

Each run starts from the same seeded database (a template copy). Needs PostgreSQL.

    python bench/billing.py [--contacts 100000] [--accounts 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import stack
from measure import table

from worker.domain.billing import month_of, next_month, previous_month


def seed_contacts(url: str, accounts: int, contacts: int, billed_through: str) -> None:
    """`contacts` active phone contacts over `accounts` accounts (credits to spare)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, balance_cents, reserved_cents, created_at) "
                "SELECT g, 'bench', 100000000, 0, now() FROM generate_series(1, :n) g"
            ),
            {"n": accounts},
        )
        conn.execute(
            text(
                "INSERT INTO assistants (id, account_id, created_at) "
                "SELECT g, 1 + (g % :a), now() FROM generate_series(1, :n) g"
            ),
            {"a": accounts, "n": contacts},
        )
        conn.execute(
            text(
                "INSERT INTO contacts (id, account_id, assistant_id, contact_type, status, "
                "address, request, setup_cost_cents, monthly_cost_cents, charged, "
                "reservation_seq, deliveries, takeovers, billed_through, created_at, updated_at) "
                "SELECT 'ct_' || lpad(g::text, 26, '0'), 1 + (g % :a), g, 'phone', 'active', "
                "'+1' || (2000000000 + g)::text, '{}'::json, 100, 150, true, 1, 1, 0, :b, "
                "now(), now() FROM generate_series(1, :n) g"
            ),
            {"a": accounts, "n": contacts, "b": billed_through},
        )
        conn.execute(text("SELECT setval('accounts_id_seq', :n)"), {"n": accounts})
        conn.execute(text("ANALYZE"))
    engine.dispose()


def peer_pass(url: str, now: datetime) -> int:
    """Per contact: lock the account, check, insert the fee, update balance and contact."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    month = month_of(now)
    charged = 0
    with engine.connect() as conn:
        due = conn.execute(
            text(
                "SELECT id, account_id, monthly_cost_cents FROM contacts "
                "WHERE status IN ('active', 'grace_period') AND billed_through < :m ORDER BY id"
            ),
            {"m": month},
        ).all()
    for contact_id, account_id, cents in due:
        with engine.begin() as conn:
            balance, reserved = conn.execute(
                text("SELECT balance_cents, reserved_cents FROM accounts WHERE id = :a FOR UPDATE"),
                {"a": account_id},
            ).one()
            if balance - reserved < cents:
                conn.execute(
                    text("UPDATE contacts SET status = 'grace_period' WHERE id = :c"),
                    {"c": contact_id},
                )
                continue
            conn.execute(
                text(
                    "INSERT INTO credit_ledger (account_id, contact_id, kind, amount_cents, key, "
                    "month, created_at) VALUES (:a, :c, 'monthly_fee', :v, :k, :m, now())"
                ),
                {
                    "a": account_id,
                    "c": contact_id,
                    "v": cents,
                    "k": f"fee:{contact_id}:{month}",
                    "m": month,
                },
            )
            conn.execute(
                text("UPDATE accounts SET balance_cents = balance_cents - :v WHERE id = :a"),
                {"v": cents, "a": account_id},
            )
            conn.execute(
                text("UPDATE contacts SET billed_through = :m WHERE id = :c"),
                {"m": month, "c": contact_id},
            )
            charged += 1
    engine.dispose()
    return charged


def ours(url: str, now: datetime) -> int:
    from worker.app.lifecycle import LifecycleService
    from worker.settings import Settings
    from worker.store.db import Database

    class NoPublisher:
        def provision(self, contact_id: str, *, queue: str) -> None: ...

    db = Database(url, pool_size=2)
    try:
        return (
            LifecycleService(db, Settings(database_url=url), NoPublisher())
            .billing_pass(now=now)
            .charged
        )
    finally:
        db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    args = parser.parse_args()

    from sqlalchemy import text

    from worker.store.db import Database
    from worker.store.migrate import upgrade

    dbs = stack.Databases(args.database_url)
    now = datetime.now(UTC)
    month = month_of(now)
    try:
        template, template_url = dbs.create("template")
        db = Database(template_url, pool_size=1)
        upgrade(db)
        db.dispose()
        started = time.perf_counter()
        seed_contacts(template_url, args.accounts, args.contacts, previous_month(month))
        print(
            f"seeded {args.contacts:,} live contacts over {args.accounts:,} accounts in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        with dbs.admin.connect() as conn:  # the copies need the template idle
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": template},
            )

        rows = [("pass", "fees", "seconds", "fees/s", "transactions")]
        results: dict[str, float] = {}
        for label, run in (("ours", ours), ("peer", peer_pass)):
            name = f"{dbs.token}_{label}"
            copy = f"cp_bench_{name}"
            with dbs.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{template}"'))
            dbs.names.append(copy)
            url = dbs.server.set(database=copy).render_as_string(hide_password=False)
            before = dbs.xacts(copy)
            started = time.perf_counter()
            fees = run(url, now)
            seconds = time.perf_counter() - started
            xacts = dbs.xacts(copy) - before
            results[label] = seconds
            rows.append(
                (label, f"{fees:,}", f"{seconds:.2f}", f"{fees / seconds:,.0f}", f"{xacts:,}")
            )
            if label == "ours":
                started = time.perf_counter()
                again = ours(url, now)
                seconds = time.perf_counter() - started
                rows.append(
                    ("ours, again (nothing owed)", f"{again:,}", f"{seconds:.2f}", "-", "-")
                )
                later = datetime.fromisoformat(f"{next_month(month)}-01T00:00:00+00:00")
                started = time.perf_counter()
                fees = ours(url, later)
                seconds = time.perf_counter() - started
                rows.append(
                    (
                        "ours, next month",
                        f"{fees:,}",
                        f"{seconds:.2f}",
                        f"{fees / seconds:,.0f}",
                        "-",
                    )
                )
        print(table(rows))
        print(
            f"ours / peer time: {results['ours'] / results['peer']:.3f} "
            f"({results['peer'] / results['ours']:.1f}x faster)"
        )
    finally:
        dbs.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
