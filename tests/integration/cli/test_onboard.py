"""`provisioner onboard` end to end: the CLI in its own process, the real API over HTTP, real
worker processes and the provider sandbox; its results file and the books checked."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import func, select
from support.invariants import check_invariants
from support.pipeline import wait_for
from support.services import serve_in_thread

from api_stub.app import create_app
from api_stub.client import Client
from worker.store.models import Contact, LedgerEntry

CLI = [sys.executable, "-m", "worker.cli", "onboard"]
HEADER = ["assistant_id", "contact_type", "phone_country", "user_phone", "email_local",
          "first_name", "last_name", "user_whatsapp_number"]


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow([row.get(name, "") for name in HEADER])
    return path


def rows_for(assistants):
    """A phone, an email and (every third assistant) a WhatsApp sender per assistant."""
    rows = []
    for n, assistant in enumerate(assistants):
        rows.append({"assistant_id": assistant, "contact_type": "phone", "phone_country": "US"})
        rows.append({"assistant_id": assistant, "contact_type": "email",
                     "email_local": f"user{assistant}", "first_name": "Ada",
                     "last_name": "Lovelace"})
        if n % 3 == 0:
            rows.append({"assistant_id": assistant, "contact_type": "whatsapp",
                         "user_whatsapp_number": "+14155552671"})
    return rows


def onboard(api_url, tenant, path, *args, wait=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PROVISIONER_API_KEY"] = tenant.api_key  # the key from the environment, not argv
    cmd = [*CLI, str(path), "--api-url", api_url, "--poll", "0.2", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def read_results(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def count(db, model, *where):
    with db.read() as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


@pytest.fixture
def worker(spawn, psettings, sandbox):
    sandbox.set_faults(sender_online_after_s=0.2)
    return spawn("worker", psettings, "--concurrency", "8")


def test_bad_rows_are_reported_by_line_and_nothing_is_sent(api_url, tenant, tmp_path, db):
    path = write_csv(tmp_path / "in.csv", [
        {"assistant_id": tenant.assistant_ids[0], "contact_type": "phone"},
        {"assistant_id": "seven", "contact_type": "phone"},
        {"assistant_id": tenant.assistant_ids[0], "contact_type": "email", "email_local": "a b",
         "first_name": "Ada"},
        {"assistant_id": tenant.assistant_ids[0], "contact_type": "phone"},
    ])
    code, _, err = onboard(api_url, tenant, path)
    assert code == 1
    assert "row 3: assistant_id:" in err
    assert "row 4:" in err and "email_local" in err and "last_name" in err
    assert "row 5:" in err and "from row 2" in err
    assert "row 2:" not in err
    assert "nothing was sent" in err
    assert count(db, Contact) == 0


def test_csv_is_onboarded_to_completion_with_a_results_file(
    api_url, make_tenant, tmp_path, db, sandbox, worker
):
    tenant = make_tenant(assistants=5)
    stranger = make_tenant(assistants=1, name="other")
    first = tenant.assistant_ids[0]
    with Client(api_url, tenant.api_key) as api:  # a contact made before the file
        before = api.create_contact(first, "phone", phone_country="US")
    rows = rows_for(tenant.assistant_ids)
    rows.append({"assistant_id": stranger.assistant_ids[0], "contact_type": "phone"})
    path = write_csv(tmp_path / "team.csv", rows)

    code, out, err = onboard(api_url, tenant, path, "--chunk-size", "4")
    assert code == 3, err  # finished, but one row was refused: its assistant is not ours
    results = read_results(tmp_path / "team.results.csv")
    assert [int(r["row"]) for r in results] == list(range(2, len(rows) + 2))
    by_row = {int(r["row"]): r for r in results}
    for line, row in enumerate(rows, start=2):
        result = by_row[line]
        assert (result["assistant_id"], result["contact_type"]) == (
            str(row["assistant_id"]), row["contact_type"])
    existing = by_row[2]  # the first assistant's phone was there before the file
    assert (existing["outcome"], existing["contact_id"]) == ("existing", before.id)
    refused = by_row[len(rows) + 1]
    assert (refused["outcome"], refused["status"], refused["error_code"]) == (
        "rejected", "rejected", "not_found")
    made = [r for r in results if r["outcome"] == "created"]
    assert len(made) == len(rows) - 2
    for result in [existing, *made]:
        assert result["status"] == "active", result
        assert result["address"] and result["contact_id"].startswith("ct_")
    emails = [r["address"] for r in made if r["contact_type"] == "email"]
    assert emails[0] == f"user{first}@assistants.example.com"
    assert f"{len(rows)} rows:" in out and "1 rejected" in out
    assert check_invariants(db, sandbox) == {"active": len(rows) - 1}


def test_running_the_same_csv_twice_gives_the_same_contacts_and_one_charge_each(
    api_url, make_tenant, tmp_path, db, sandbox, worker
):
    tenant = make_tenant(assistants=4)
    rows = rows_for(tenant.assistant_ids)
    path = write_csv(tmp_path / "team.csv", rows)
    first = onboard(api_url, tenant, path, "--chunk-size", "3")
    assert first[0] == 0, first[2]
    once = read_results(tmp_path / "team.results.csv")
    second = onboard(api_url, tenant, path, "--chunk-size", "3")
    assert second[0] == 0, second[2]
    twice = read_results(tmp_path / "team.results.csv")
    assert twice == once
    assert {r["outcome"] for r in once} == {"created"}
    assert count(db, Contact) == len(rows)
    assert count(db, LedgerEntry, LedgerEntry.kind == "capture") == len(rows)
    assert check_invariants(db, sandbox) == {"active": len(rows)}


def test_an_interrupted_onboarding_resumes_and_creates_nothing_twice(
    make_settings, make_tenant, tmp_path, db, sandbox, worker
):
    tenant = make_tenant(credits_cents=100_000, assistants=24)
    rows = [{"assistant_id": a, "contact_type": "phone"} for a in tenant.assistant_ids]
    path = write_csv(tmp_path / "team.csv", rows)
    # A low rate limit for the key makes the run slow enough to stop it half-way (the client
    # waits out every 429 for its Retry-After): 12 chunks at 3 requests a second take at least
    # 4 s, so a stop seconds after the first new contact still lands well before the end,
    # even on a loaded machine.
    with serve_in_thread(create_app(make_settings(rate_limit="3/second"), db=db)) as url:
        for sig in (signal.SIGINT, signal.SIGKILL):
            proc = onboard(url, tenant, path, "--chunk-size", "2", wait=False)
            made = count(db, Contact)
            wait_for(lambda made=made: count(db, Contact) > made, timeout=30, every=0.02)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
            stopped_at = count(db, Contact)
            assert stopped_at < len(rows), "the run was not interrupted half-way"
            if sig == signal.SIGINT:
                assert proc.returncode == 130 and "re-run the same command" in err
            else:
                assert proc.returncode == -signal.SIGKILL
        assert not (tmp_path / "team.results.csv").exists()
        code, _, err = onboard(url, tenant, path, "--chunk-size", "2")
    assert code == 0, err
    results = read_results(tmp_path / "team.results.csv")
    assert len({r["contact_id"] for r in results}) == len(rows)
    assert {(r["outcome"], r["status"]) for r in results} == {("created", "active")}
    assert count(db, Contact) == len(rows)
    assert count(db, LedgerEntry, LedgerEntry.kind == "capture") == len(rows)
    assert check_invariants(db, sandbox) == {"active": len(rows)}
