"""`provisioner offboard` end to end: onboard's results file fed back, the CLI in its own
process, the real API, a real worker and the sandbox; a re-run changes nothing."""

from __future__ import annotations

import csv

from support.invariants import check_invariants
from test_onboard import onboard, read_results, rows_for, worker, write_csv  # noqa: F401

from worker.cli import offboard as offboard_module

CLI_ARGS = ("--poll", "0.2")


def offboard(api_url, tenant, path, *args):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PROVISIONER_API_KEY"] = tenant.api_key
    cmd = [sys.executable, "-m", "worker.cli", "offboard", str(path), "--api-url", api_url,
           *CLI_ARGS, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    return done.returncode, done.stdout, done.stderr


def test_onboard_results_offboard_as_they_are_and_a_rerun_changes_nothing(
    api_url, make_tenant, worker, sandbox, tmp_path, db
):
    tenant = make_tenant(assistants=3)
    source = write_csv(tmp_path / "in.csv", rows_for(tenant.assistant_ids))
    code, _, err = onboard(api_url, tenant, source)
    assert code == 0, err
    onboarded = read_results(tmp_path / "in.results.csv")

    code, out, err = offboard(api_url, tenant, tmp_path / "in.results.csv")
    assert code == 0, err
    results = read_results(tmp_path / "in.results.offboard.csv")
    assert {r["contact_id"] for r in results} == {r["contact_id"] for r in onboarded}
    assert {(r["outcome"], r["status"], r["deleted_reason"]) for r in results} == {
        ("deleted", "deleted", "requested")
    }
    assert f"{len(results)} rows: {len(results)} deleted" in out
    assert check_invariants(db, sandbox) == {"deleted": len(results)}

    code, _, err = offboard(api_url, tenant, tmp_path / "in.results.csv")
    assert code == 0, err
    assert read_results(tmp_path / "in.results.offboard.csv") == results


def test_rows_by_type_find_the_live_contact_and_bad_rows_send_nothing(
    api_url, make_tenant, worker, sandbox, tmp_path, db
):
    tenant = make_tenant(assistants=2)
    a, b = tenant.assistant_ids
    source = write_csv(tmp_path / "in.csv", [
        {"assistant_id": a, "contact_type": "phone", "phone_country": "US"},
        {"assistant_id": b, "contact_type": "phone", "phone_country": "US"},
    ])
    assert onboard(api_url, tenant, source)[0] == 0

    bad = tmp_path / "bad.csv"
    bad.write_text(f"assistant_id,contact_type\n{a},fax\nx,phone\n")
    code, _, err = offboard(api_url, tenant, bad)
    assert code == offboard_module.BAD_INPUT
    assert "row 2" in err and "row 3" in err and "nothing was sent" in err
    assert check_invariants(db, sandbox) == {"active": 2}

    by_type = tmp_path / "by_type.csv"
    with by_type.open("w", newline="") as handle:
        csv.writer(handle).writerows([("assistant_id", "contact_type"), (a, "phone"),
                                      (b, "email")])
    code, out, _ = offboard(api_url, tenant, by_type)
    assert code == offboard_module.SOME_LEFT  # b has no email contact
    results = {r["assistant_id"]: r for r in read_results(tmp_path / "by_type.offboard.csv")}
    assert results[str(a)]["outcome"] == "deleted"
    assert results[str(b)]["outcome"] == "not_found"
    assert check_invariants(db, sandbox) == {"active": 1, "deleted": 1}
