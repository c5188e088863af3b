"""WhatsApp senders as they really onboard, end to end: the account's own WABA set through the
API (checked with Twilio), contacts submitted through the API and provisioned by a real worker
process against the sandbox over HTTP. A sender that must verify gets its code by SMS on our
number and the worker submits it; one taken offline in review fails its contact with Twilio's
reason and leaves nothing; a WABA at its sender limit fails the next contact cleanly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.invariants import check_invariants
from support.pipeline import FAST, all_terminal, wait_for
from support.services import serve_in_thread

from worker.secrets import new_key

WABA = "104000000000042"
WHATSAPP = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}
# A sender of its own without a WABA of the account's own (else the shared pool's).
DEDICATED = {**WHATSAPP, "whatsapp_sender": "dedicated"}


@pytest.fixture
def wsettings(make_settings, sandbox):
    return make_settings(sandbox_url=sandbox.url, secret_keys=new_key(), **FAST)


@pytest.fixture
def api(wsettings, db) -> Iterator[httpx.Client]:
    from api_stub.app import create_app

    with serve_in_thread(create_app(wsettings, db=db)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


def control(sandbox, method: str, path: str, **body: Any) -> Any:
    response = httpx.request(method, f"{sandbox.url}/_sandbox{path}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def onboarding(sandbox, **values: Any) -> None:
    control(sandbox, "PUT", "/twilio/senders/onboarding", **values)


def own_waba(api, tenant, sandbox, sender_limit: int = 20) -> dict[str, Any]:
    control(sandbox, "PUT", f"/twilio/wabas/{WABA}", sender_limit=sender_limit)
    answer = api.put("/v0/providers/whatsapp", headers=tenant.headers, json={"waba_id": WABA})
    assert answer.status_code == 200, answer.text
    info: dict[str, Any] = answer.json()["info"]
    return info


def post(api, tenant, assistant=None, body=WHATSAPP) -> dict[str, Any]:
    assistant = assistant or tenant.assistant_ids[0]
    response = api.post(f"/v0/assistant/{assistant}/contact", headers=tenant.headers,
                        json=body)
    assert response.status_code == 202, response.text
    info: dict[str, Any] = response.json()["info"]
    return info


def read(api, tenant, info) -> dict[str, Any]:
    url = f"/v0/assistant/{info['assistant_id']}/contact/{info['id']}"
    contact: dict[str, Any] = api.get(url, headers=tenant.headers).json()["info"]
    return contact


def test_a_sender_that_must_verify_gets_its_code_submitted_and_goes_active(
    api, spawn, wsettings, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.3)
    onboarding(sandbox, verification_rate=1.0, verifying_s=0.3, review_s=0.5)
    tenant = make_tenant()
    assert own_waba(api, tenant, sandbox)["senders_on_waba"] == 0
    info = post(api, tenant)
    worker = spawn("worker", wsettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    contact = read(api, tenant, info)
    assert contact["status"] == "active", contact["error"]
    [sender] = sandbox.resources()["senders"]
    assert (sender["tag"], sender["status"], sender["waba_id"], sender["verification"]) == (
        info["id"], "ONLINE", WABA, True)
    assert sender["address"] == f"whatsapp:{contact['address']}"
    [sms] = httpx.get(
        f"{sandbox.url}/_sandbox/twilio/numbers/{contact['address']}/messages").json()
    assert check_invariants(db, sandbox) == {"active": 1}
    # It went through each state, and the code never reached a log line.
    worker.stop()
    lines = [json.loads(line) for line in worker.log.read_text().splitlines()
             if line.startswith("{")]
    waits = [e for e in lines if e["event"] == "step_waiting"]
    # The code was submitted once (the answer: VERIFYING), then review was waited out.
    submitted = [e for e in waits if e.get("code_tried")]
    assert submitted and submitted[0]["status"] == "VERIFYING", waits
    assert "TWILIO_REVIEW" in {e["status"] for e in waits}
    code = "".join(ch for ch in sms["body"] if ch.isdigit())
    assert code not in worker.log.read_text()
    # The WABA now shows the sender under it.
    again = api.put("/v0/providers/whatsapp", headers=tenant.headers, json={"waba_id": WABA})
    assert again.json()["info"]["senders_on_waba"] == 1


def test_a_sender_still_creating_is_polled_with_a_growing_wait_up_to_its_bound(
    api, spawn, wsettings, make_tenant, sandbox, db
):
    # Meta takes its time: a sender is CREATING for 3 s. Polled every 0.2 s, it would cost
    # 15 polls; with the backoff, the waits grow by half up to sender_poll_max_s.
    settings = wsettings.model_copy(update={"sender_poll_max_s": 0.6})
    sandbox.set_faults(sender_online_after_s=3.0)
    tenant = make_tenant()
    own_waba(api, tenant, sandbox)
    info = post(api, tenant)
    worker = spawn("worker", settings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    assert read(api, tenant, info)["status"] == "active"
    worker.stop()
    lines = [json.loads(line) for line in worker.log.read_text().splitlines()
             if line.startswith("{")]
    waits = [e["wait_s"] for e in lines
             if e["event"] == "step_waiting" and e.get("status") == "CREATING"]
    assert waits[:5] == [0.2, 0.3, 0.45, 0.6, 0.6], waits
    polls = sandbox.stats()["calls"].get("twilio.poll", 0)
    assert polls < 10, sandbox.stats()["calls"]


def test_a_sender_taken_offline_in_review_fails_the_contact_with_the_reason_and_leaves_nothing(
    api, spawn, wsettings, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.2)
    onboarding(sandbox, review_s=120)  # it would stay in TWILIO_REVIEW
    tenant = make_tenant(credits_cents=1_000)
    own_waba(api, tenant, sandbox)
    info = post(api, tenant)
    spawn("worker", wsettings, "--concurrency", "2")

    def in_review() -> bool:
        return any(s["status"] == "TWILIO_REVIEW" for s in sandbox.resources()["senders"])

    wait_for(in_review, timeout=30)
    [sender] = sandbox.resources()["senders"]
    control(sandbox, "POST", f"/twilio/senders/{sender['id']}/offline",
            code="63117", message="Display name rejected by Meta")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    contact = read(api, tenant, info)
    assert contact["status"] == "failed"
    assert contact["error"]["code"] == "sender_rejected"
    assert "Display name rejected by Meta" in contact["error"]["message"]
    resources = sandbox.resources()
    assert resources["senders"] == [] and resources["phone_numbers"] == []
    credits = api.get("/v0/credits", headers=tenant.headers).json()["info"]
    assert (credits["balance"], credits["reserved"]) == ("10.00", "0.00")
    assert check_invariants(db, sandbox) == {"failed": 1}


def test_a_waba_at_its_sender_limit_fails_the_next_contact_cleanly(
    api, spawn, wsettings, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.2)
    tenant = make_tenant(assistants=2)
    own_waba(api, tenant, sandbox, sender_limit=1)
    first = post(api, tenant, tenant.assistant_ids[0])
    spawn("worker", wsettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    assert read(api, tenant, first)["status"] == "active"
    second = post(api, tenant, tenant.assistant_ids[1])
    wait_for(lambda: all_terminal(db, 2), timeout=60)
    contact = read(api, tenant, second)
    assert contact["status"] == "failed"
    assert contact["error"]["code"] == "waba_sender_limit"
    # Only the first contact's number and sender are left.
    resources = sandbox.resources()
    assert [n["tag"] for n in resources["phone_numbers"]] == [first["id"]]
    assert [s["tag"] for s in resources["senders"]] == [first["id"]]
    assert check_invariants(db, sandbox) == {"active": 1, "failed": 1}


def test_without_its_own_waba_the_sender_is_registered_under_the_platforms(
    api, spawn, wsettings, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.2)
    tenant = make_tenant()
    post(api, tenant, body=DEDICATED)
    spawn("worker", wsettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    [sender] = sandbox.resources()["senders"]
    assert sender["waba_id"] == wsettings.twilio_waba_id == "100000000000001"
    assert check_invariants(db, sandbox) == {"active": 1}


def test_the_whatsapp_connection_is_validated_shown_and_refused_deletion_while_in_use(
    api, make_tenant, sandbox, db
):
    tenant = make_tenant()
    bad = api.put("/v0/providers/whatsapp", headers=tenant.headers, json={"waba_id": "x1"})
    assert bad.status_code == 422 and "waba_id" in bad.json()["error"]["fields"]
    assert api.get("/v0/providers/whatsapp", headers=tenant.headers).status_code == 404
    own_waba(api, tenant, sandbox)
    shown = api.get("/v0/providers/whatsapp", headers=tenant.headers).json()["info"]
    assert (shown["provider"], shown["waba_id"]) == ("whatsapp", WABA)
    post(api, tenant)  # pending: it will register its sender under this WABA
    refused = api.delete("/v0/providers/whatsapp", headers=tenant.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "connection_in_use"
    other = api.put("/v0/providers/whatsapp", headers=tenant.headers,
                    json={"waba_id": "104000000000043"})
    assert other.status_code == 409 and "waba_id" in other.json()["error"]["fields"]
    # Email routing ignores the WhatsApp connection: an email still goes to the platform.
    email = api.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact", headers=tenant.headers,
                     json={"contact_type": "email", "email_local": "ada", "first_name": "Ada",
                           "last_name": "Lovelace"})
    assert email.status_code == 202, email.text


def test_review_is_waited_out_with_a_capped_backoff_up_to_its_bound_then_fails_cleanly(
    api, spawn, wsettings, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.1)
    onboarding(sandbox, review_s=600)  # a review that outlasts our bound
    settings = wsettings.model_copy(
        update={"sender_review_timeout_s": 3, "sender_review_poll_max_s": 0.8})
    tenant = make_tenant()
    info = post(api, tenant, body=DEDICATED)
    worker = spawn("worker", settings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    contact = read(api, tenant, info)
    assert contact["status"] == "failed"
    assert contact["error"]["code"] == "sender_review_timeout"
    assert sandbox.resources()["senders"] == [] and sandbox.resources()["phone_numbers"] == []
    worker.stop()
    lines = [json.loads(line) for line in worker.log.read_text().splitlines()
             if line.startswith("{")]
    delays = [e["wait_s"] for e in lines
              if e["event"] == "step_waiting" and e.get("status") == "TWILIO_REVIEW"]
    # sender_poll_s (0.2) doubling, capped at sender_review_poll_max_s.
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8], delays
    assert check_invariants(db, sandbox) == {"failed": 1}


def test_user_whatsapp_number_is_required_normalised_recorded_and_sent_to_no_provider(
    api, spawn, wsettings, make_tenant, sandbox, db
):
    sandbox.set_faults(sender_online_after_s=0.1)
    tenant = make_tenant()
    url = f"/v0/assistant/{tenant.assistant_ids[0]}/contact"
    missing = api.post(url, headers=tenant.headers, json={"contact_type": "whatsapp"})
    assert missing.status_code == 422
    assert "user_whatsapp_number" in missing.json()["error"]["fields"]
    invalid = api.post(url, headers=tenant.headers,
                       json={"contact_type": "whatsapp", "user_whatsapp_number": "+1415"})
    assert invalid.status_code == 422
    assert "user_whatsapp_number" in invalid.json()["error"]["fields"]
    answer = api.post(url, headers=tenant.headers,
                      json={"contact_type": "whatsapp", "user_whatsapp_number": "+44 20 7183 8750"})
    assert answer.status_code == 202, answer.text
    info = answer.json()["info"]
    assert info["request"]["user_whatsapp_number"] == "+442071838750"
    worker = spawn("worker", wsettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    contact = read(api, tenant, info)
    assert contact["status"] == "active"
    # The user's number is the route to this assistant's own sender, kept on the contact:
    # no provider resource carries it, and no log line shows it.
    assert contact["request"]["user_whatsapp_number"] == "+442071838750"
    resources = json.dumps(sandbox.resources())
    assert "442071838750" not in resources
    worker.stop()
    assert "442071838750" not in worker.log.read_text()
