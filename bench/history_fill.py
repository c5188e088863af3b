"""The history of history.py: N terminal phone contacts with everything they leave behind,
written by `INSERT ... SELECT ... FROM generate_series` (the API would take hours), and the
open work measured on top of it, the same in the empty and the full database.

Contact g (1..N) belongs to history assistant g mod `assistants` (of account 1 + that mod
`accounts`; account 1 is the bench's, so its assistants and its ledger are full too). Four in
five were deleted after a life of one month (journal: find_number, buy_number,
release_number; ledger: reserve, capture, monthly_fee; events contact.active and
contact.deleted), one in five failed (journal: find_number failed; ledger: reserve, release;
event contact.failed). Every event was dispatched and delivered in one attempt. Created one
every 30 seconds, so the history spans about a year per million contacts, all older than the
retention window except the newest month.
"""

from __future__ import annotations

import time
from collections.abc import Callable

HISTORY_ACCOUNTS = 10
HISTORY_ASSISTANTS = 100_000
# The history ends 10 days before now (so its last month is inside the retention window).
ID = "'ct_' || lpad(to_char(g, 'FM0000000000000000000000000'), 26, '0')"
AT = "now() - interval '10 days' - (:n - g) * interval '30 seconds'"
PAYLOAD = (
    '{"id": "ct_x", "assistant_id": 1, "contact_type": "phone", "status": "deleted", '
    '"address": "+12025550100", "error": null, "steps": [{"name": "find_number", '
    '"status": "done"}, {"name": "buy_number", "status": "done"}], "monthly_cost": "1.50"}'
)

STATEMENTS: list[tuple[str, str]] = [
    (
        "accounts",
        "INSERT INTO accounts (name, balance_cents, reserved_cents, created_at) "
        "SELECT 'history ' || a, 100000000, 0, now() FROM generate_series(2, :accounts) a",
    ),
    (
        "webhook endpoints",
        "INSERT INTO webhook_endpoints (account_id, url, secret, created_at, updated_at) "
        "SELECT id, 'https://example.com/hook', 'whsec_x', now(), now() FROM accounts "
        "ON CONFLICT DO NOTHING",
    ),
    (
        "assistants",
        "CREATE TEMP TABLE hist_assistants AS SELECT i, a.id AS account_id FROM "
        "generate_series(0, :assistants - 1) i JOIN LATERAL (SELECT id FROM accounts "
        "ORDER BY id OFFSET (i % :accounts) LIMIT 1) a ON true",
    ),
    (
        "assistants",
        "ALTER TABLE hist_assistants ADD COLUMN assistant_id bigint; "
        "WITH ins AS (INSERT INTO assistants (account_id, name, created_at) "
        "SELECT account_id, 'history ' || i, now() FROM hist_assistants ORDER BY i "
        "RETURNING id) SELECT 1",
    ),
    (
        "assistants",
        "UPDATE hist_assistants h SET assistant_id = x.id FROM (SELECT id, "
        "row_number() OVER (ORDER BY id) - 1 AS i FROM assistants WHERE name LIKE 'history %') "
        "x WHERE x.i = h.i; CREATE UNIQUE INDEX ON hist_assistants (i); ANALYZE hist_assistants",
    ),
    (
        "contacts",
        "INSERT INTO contacts (id, account_id, assistant_id, contact_type, status, address, "
        "request, setup_cost_cents, monthly_cost_cents, charged, billed_through, deleted_at, "
        "deleted_reason, reservation_seq, error_code, error_message, deliveries, takeovers, "
        "started_at, created_at, updated_at) "
        f"SELECT {ID}, h.account_id, h.assistant_id, 'phone', "
        "CASE WHEN g % 5 = 0 THEN 'failed' ELSE 'deleted' END, "
        "CASE WHEN g % 5 = 0 THEN NULL ELSE '+1' || (2000000000 + g)::text END, "
        '\'{"contact_type": "phone", "phone_country": "US"}\', 100, 150, g % 5 <> 0, '
        "CASE WHEN g % 5 = 0 THEN NULL ELSE to_char(at, 'YYYY-MM') END, "
        "CASE WHEN g % 5 = 0 THEN NULL ELSE at + interval '30 days' END, "
        "CASE WHEN g % 5 = 0 THEN NULL ELSE 'requested' END, 1, "
        "CASE WHEN g % 5 = 0 THEN 'no_numbers_available' END, "
        "CASE WHEN g % 5 = 0 THEN 'no numbers available in US' END, 1, 0, at, at, "
        "CASE WHEN g % 5 = 0 THEN at ELSE at + interval '30 days' END "
        f"FROM (SELECT g, {AT} AS at FROM generate_series(1, :n) g) s "
        "JOIN hist_assistants h ON h.i = g % :assistants",
    ),
    (
        "steps",
        "INSERT INTO contact_steps (contact_id, position, name, status, attempts, provider_id, "
        "detail, updated_at) "
        "SELECT c.id, p, (ARRAY['find_number', 'buy_number', 'release_number'])[p + 1], "
        "CASE WHEN c.status = 'failed' THEN 'failed' ELSE 'done' END, 1, "
        "CASE WHEN p = 1 THEN 'PN' || md5(c.id) END, '{}', c.updated_at "
        "FROM contacts c CROSS JOIN generate_series(0, 2) p "
        "WHERE c.id LIKE 'ct_0%' AND (c.status = 'deleted' OR p = 0)",
    ),
    (
        "ledger",
        "INSERT INTO credit_ledger (account_id, contact_id, kind, amount_cents, month, key, "
        "created_at) "
        "SELECT c.account_id, c.id, k.kind, "
        "CASE WHEN k.kind = 'monthly_fee' THEN 150 ELSE 100 END, "
        "CASE WHEN k.kind = 'monthly_fee' THEN c.billed_through END, "
        "k.kind || ':' || c.id || ':1', c.created_at "
        "FROM contacts c JOIN (VALUES ('reserve', true, true), ('capture', true, false), "
        "('monthly_fee', true, false), ('release', false, true)) k(kind, on_deleted, on_failed) "
        "ON CASE WHEN c.status = 'deleted' THEN k.on_deleted ELSE k.on_failed END "
        "WHERE c.id LIKE 'ct_0%'",
    ),
    (
        "events",
        "INSERT INTO events (id, account_id, contact_id, type, payload, created_at, "
        "dispatched_at) "
        "SELECT 'ev_' || substr(c.id, 4) || t.n, c.account_id, c.id, t.type, "
        f"'{PAYLOAD}', c.created_at + t.n * interval '1 minute', "
        "c.created_at + t.n * interval '1 minute' "
        "FROM contacts c JOIN (VALUES (0, 'contact.active', 'deleted'), "
        "(1, 'contact.deleted', 'deleted'), (0, 'contact.failed', 'failed')) t(n, type, st) "
        "ON t.st = c.status WHERE c.id LIKE 'ct_0%'",
    ),
    (
        "deliveries",
        "INSERT INTO webhook_deliveries (id, event_id, account_id, contact_id, type, status, "
        "attempts, next_attempt_at, created_at, updated_at) "
        "SELECT 'wd_' || substr(e.id, 4), e.id, e.account_id, e.contact_id, e.type, "
        "'succeeded', 1, NULL, e.created_at, e.created_at FROM events e "
        "WHERE e.id LIKE 'ev_0%'",
    ),
    (
        "attempts",
        "INSERT INTO webhook_attempts (delivery_id, attempted_at, outcome, status_code, "
        "latency_ms, response) "
        "SELECT d.id, d.created_at, 'succeeded', 200, 40, 'ok' FROM webhook_deliveries d "
        "WHERE d.id LIKE 'wd_0%'",
    ),
    (
        "idempotency keys",
        "INSERT INTO idempotency_keys (account_id, key, fingerprint, completed, "
        "response_status, response_body, locked_at, expires_at) "
        "SELECT 1 + g % :accounts, 'history-' || g, md5(g::text), true, 202, '{}', "
        "now() - g * interval '1 second', now() + interval '1 day' - g * interval '1 second' "
        "FROM generate_series(1, :keys) g",
    ),
]


def fill(url: str, n: int, say: Callable[[str], None]) -> dict[str, float]:
    """Writes the history into the (migrated, seeded) database at `url`; seconds per table."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    params = {
        "n": n,
        "accounts": HISTORY_ACCOUNTS,
        "assistants": HISTORY_ASSISTANTS,
        "keys": 50_000,  # a day of keys, all still inside their window
    }
    took: dict[str, float] = {}
    with psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database
    ) as conn:
        for name, sql in STATEMENTS:
            started = time.monotonic()
            conn.execute(_named(sql, params))
            conn.commit()
            took[name] = took.get(name, 0.0) + time.monotonic() - started
            say(f"  history: {name} ({time.monotonic() - started:.1f} s)")
        started = time.monotonic()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        took["vacuum analyze"] = time.monotonic() - started
    return took


def _named(sql: str, params: dict[str, int]) -> str:
    """The statement with `:name` replaced by its integer (they are all ours, all integers)."""
    for name in sorted(params, key=len, reverse=True):
        sql = sql.replace(f":{name}", str(int(params[name])))
    return sql
