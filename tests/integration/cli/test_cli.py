"""The `provisioner` CLI end to end: JSON output, and an API that answers for the key it made."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
from support.services import free_port, idle_connection_is_kept, settings_env

CLI = [sys.executable, "-m", "worker.cli"]


def run(env, *args):
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_accounts_assistants_credits_and_api(settings, tmp_path):
    env = settings_env(settings)
    account = run(env, "accounts", "create", "--name", "Acme", "--credits", "25.00", "--json")
    assert set(account) == {"account_id", "api_key"}
    one = run(env, "assistants", "create", "--account", str(account["account_id"]), "--json")
    many = run(env, "assistants", "create", "--account", str(account["account_id"]),
               "--count", "3", "--json")
    assert len(many["assistant_ids"]) == 3 and one["assistant_id"] not in many["assistant_ids"]
    topped = run(env, "credits", "add", str(account["account_id"]), "5.50", "--key", "inv-1",
                 "--json")
    again = run(env, "credits", "add", str(account["account_id"]), "5.50", "--key", "inv-1",
                "--json")
    assert (topped["applied"], topped["balance"]) == (True, "30.50")
    assert (again["applied"], again["balance"]) == (False, "30.50")

    port = free_port()
    api = subprocess.Popen([*CLI, "api", "--host", "127.0.0.1", "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        headers = {"Authorization": f"Bearer {account['api_key']}"}
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "provisioner api did not start"
            time.sleep(0.1)
        assert httpx.get(f"{base}/v0/credits", headers=headers).json()["info"] == {
            "balance": "30.50", "reserved": "0.00", "available": "30.50"}
        posted = httpx.post(f"{base}/v0/assistant/{one['assistant_id']}/contact",
                            json={"contact_type": "phone"}, headers=headers)
        assert posted.status_code == 202
        listed = httpx.get(f"{base}/v0/assistant/{one['assistant_id']}/contact", headers=headers)
        assert [c["id"] for c in listed.json()["info"]] == [posted.json()["info"]["id"]]
        # A client's pooled connection, idle past httpx's expiry, is not reset under it.
        assert idle_connection_is_kept(base, "/healthz")
    finally:
        api.terminate()
        _, err = api.communicate(timeout=15)
    assert account["api_key"] not in err.decode()


def test_bad_amount_and_unknown_account_are_clear_errors(settings):
    env = settings_env(settings)
    bad = subprocess.run([*CLI, "credits", "add", "1", "12.345"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "AMOUNT" in bad.stderr
    missing = subprocess.run([*CLI, "credits", "add", "999", "1.00"], env=env,
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no account 999" in missing.stderr
