"""Twilio's Regulations cached with a TTL, against the real sandbox over HTTP and the real
database: beat's refresh fills `twilio_regulations` from the sandbox's Regulations and number
lists, a rule Twilio changes (the sandbox's control) reaches the API's 422 answers once the
TTL has passed, a purchase refused with 21649 marks its entry stale and the next pass fetches
it first, and with no usable entry the built-in table judges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from support.pipeline import FAST, all_terminal, wait_for
from support.services import serve_in_thread

from sandbox.testing import SandboxControl
from worker.app.regulations import LEASE, RegulationsRefresher
from worker.domain.regulatory import Rule
from worker.store import regulations as store
from worker.store.models import Contact, TaskLease, TwilioRegulation


@pytest.fixture
def rsettings(make_settings, sandbox):
    return make_settings(
        sandbox_url=sandbox.url,
        twilio_regulations_countries="US,GB,DE",
        twilio_regulations_reload_s=0.1,
        twilio_regulations_recent=50,
        **FAST,
    )


@pytest.fixture
def api(rsettings, db) -> Iterator[httpx.Client]:
    from api_stub.app import create_app

    with serve_in_thread(create_app(rsettings, db=db)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


def post(api, tenant, assistant: int, country: str, kind: str = "local") -> httpx.Response:
    return api.post(f"/v0/assistant/{assistant}/contact", headers=tenant.headers, json={
        "contact_type": "phone", "user_phone": "+14155552671", "phone_country": country,
        "phone_number_type": kind})


def code(answer: httpx.Response) -> Any:
    return answer.json()["error"]["code"] if answer.status_code >= 400 else answer.status_code


def entries(db) -> dict[tuple[str, str, str], TwilioRegulation]:
    with db.read() as session:
        rows = session.execute(select(TwilioRegulation)).scalars().all()
        return {(r.country, r.number_type, r.end_user_type): r for r in rows}


def age(db, seconds: float, **where: str) -> None:
    """Make entries look fetched `seconds` ago."""
    with db.write() as session:
        session.execute(update(TwilioRegulation).filter_by(**where).values(
            fetched_at=datetime.now(UTC) - timedelta(seconds=seconds)))


def test_the_refresh_fills_the_table_from_twilios_regulations_and_number_lists(
    rsettings, db, sandbox: SandboxControl
):
    before = sandbox.stats()["calls"]
    outcome = RegulationsRefresher(db, rsettings).run()
    # Each country's four number types: US sells local and toll_free, GB and DE all four.
    assert outcome == {"refreshed": 12, "failed": 0, "due": 12, "skipped": 0}
    found = entries(db)
    assert len(found) == 24  # each pair for both end-user types
    gb, de, us = (found[(c, "local", "business")] for c in ("GB", "DE", "US"))
    assert (gb.bundle, gb.address, de.bundle, de.address) == (True, "any", True, "local")
    assert (us.bundle, us.address, us.regulation_sid) == (False, "none", None)
    assert gb.regulation_sid.startswith("RN") and not gb.stale
    assert gb.sold and us.sold and not found[("US", "mobile", "business")].sold
    calls = sandbox.stats()["calls"]
    # One look at each country's number lists; one Regulations list and one one-number
    # search per pair it sells.
    assert calls.get("twilio.countries", 0) - before.get("twilio.countries", 0) == 3
    assert calls.get("twilio.regulatory", 0) - before.get("twilio.regulatory", 0) == 10
    assert calls.get("twilio.search", 0) - before.get("twilio.search", 0) == 10

    # Nothing is due again before the TTL.
    assert RegulationsRefresher(db, rsettings).run()["refreshed"] == 0
    assert {r.fetched_at for r in entries(db).values()} == {r.fetched_at for r in found.values()}


def test_a_pass_is_bounded_and_only_one_runs_at_a_time(make_settings, rsettings, db):
    small = make_settings(**{**rsettings.model_dump(), "twilio_regulations_per_pass": 3})
    assert RegulationsRefresher(db, small).run() == {
        "refreshed": 3, "failed": 0, "due": 12, "skipped": 0}
    with db.write() as session:
        assert store.take_lease(session, LEASE, "someone-else", datetime.now(UTC), 60)
    assert RegulationsRefresher(db, small).run()["skipped"] == 1
    assert len(entries(db)) == 6
    with db.write() as session:  # the other holder died: its lease expires
        session.execute(update(TaskLease).values(expires_at=datetime.now(UTC)
                                                 - timedelta(seconds=1)))
    assert RegulationsRefresher(db, small).run()["refreshed"] == 3


def test_the_countries_of_recent_phone_contacts_are_refreshed_too(
    rsettings, api, db, make_tenant
):
    tenant = make_tenant()
    assert post(api, tenant, tenant.assistant_ids[0], "NL").status_code == 202
    RegulationsRefresher(db, rsettings).run()
    nl = entries(db)[("NL", "local", "business")]
    assert (nl.bundle, nl.address) == (False, "none")  # the sandbox does not regulate NL


def test_a_rule_change_reaches_the_apis_answer_once_the_ttl_has_passed(
    rsettings, api, db, make_tenant, sandbox: SandboxControl
):
    tenant = make_tenant(assistants=6)
    a = iter(tenant.assistant_ids)
    refresher = RegulationsRefresher(db, rsettings)
    refresher.run()
    first = next(a)
    assert post(api, tenant, first, "US").status_code == 202
    # The built-in table says GB mobile numbers need a bundle; so does Twilio, for now.
    assert code(post(api, tenant, next(a), "GB", "mobile")) == "regulatory_bundle_required"

    # Twilio changes its rules: US local numbers need a bundle, GB mobile ones nothing.
    sandbox.set_regulation("US", "local", bundle=True, address="any")
    sandbox.set_regulation("GB", "mobile", bundle=False, address="none")
    assert refresher.run()["refreshed"] == 0  # within the TTL: the cached answer stands
    assert post(api, tenant, next(a), "US").status_code == 202

    age(db, rsettings.twilio_regulations_ttl_s + 1)  # the TTL passes
    assert refresher.run()["refreshed"] == 12
    us = entries(db)[("US", "local", "business")]
    assert (us.bundle, us.address) == (True, "any")
    refused = wait_for(lambda: (r := post(api, tenant, first, "US")).status_code == 422 and r)
    assert code(refused) == "regulatory_bundle_required"
    assert "phone_country" in refused.json()["error"]["fields"]
    # Looser than the built-in table: Twilio's fresh answer is what judges.
    assert post(api, tenant, next(a), "GB", "mobile").status_code == 202


def test_documents_put_are_judged_by_the_cached_regulations(
    rsettings, api, db, make_tenant, sandbox: SandboxControl
):
    """`PUT /v0/providers/twilio/regulatory/{country}` judges what is required as a contact's
    request is judged: by Twilio's fresh answer, not the built-in table."""
    tenant = make_tenant()

    def put(country: str, **body: str) -> httpx.Response:
        return api.put(f"/v0/providers/twilio/regulatory/{country}", headers=tenant.headers,
                       json=body)

    refresher = RegulationsRefresher(db, rsettings)
    refresher.run()
    assert put("US", number_type="local").status_code == 200  # nothing needed
    refused = put("GB", number_type="mobile")
    assert refused.status_code == 422 and "bundle_sid" in refused.json()["error"]["fields"]

    sandbox.set_regulation("US", "local", bundle=True, address="any")
    sandbox.set_regulation("GB", "mobile", bundle=False, address="none")
    age(db, rsettings.twilio_regulations_ttl_s + 1)
    assert refresher.run()["refreshed"] == 12
    refused = wait_for(lambda: (r := put("US", number_type="local")).status_code == 422 and r)
    assert "bundle_sid" in refused.json()["error"]["fields"]
    assert put("GB", number_type="mobile").status_code == 200  # the table would want a bundle


def test_twilios_number_lists_decide_which_types_a_country_sells(
    make_settings, rsettings, api, db, make_tenant
):
    """The built-in table does not know NL, so it lets every type through; Twilio's country
    resource says NL has a Local list only. Once refreshed, the API refuses NL mobile
    numbers (422 naming `phone_number_type`, before anything is reserved), for a contact
    and for documents alike."""
    tenant = make_tenant(assistants=5)
    a, scratch, b, c, d = tenant.assistant_ids
    assert post(api, tenant, a, "NL", "mobile").status_code == 202  # the table cannot tell
    with_nl = make_settings(**{**rsettings.model_dump(), "twilio_regulations_countries": "NL"})
    assert RegulationsRefresher(db, with_nl).run()["refreshed"] == 4
    nl = entries(db)
    assert [k for k in ("local", "mobile", "national", "toll_free")
            if nl[("NL", k, "business")].sold] == ["local"]

    # The API's copy reloads within `twilio_regulations_reload_s` (posts meanwhile may pass).
    wait_for(lambda: post(api, tenant, scratch, "NL", "mobile").status_code == 422)
    refused = post(api, tenant, b, "NL", "mobile")
    assert refused.status_code == 422 and refused.json()["error"]["fields"] == {
        "phone_number_type": "NL has no mobile numbers: one of local"}
    assert post(api, tenant, c, "NL").status_code == 202
    # A batch's item is refused the same way, its neighbour accepted.
    batch = api.post("/v0/contact/batch", headers=tenant.headers, json={"items": [
        {"assistant_id": d, "contact_type": "phone", "phone_country": "NL",
         "phone_number_type": "toll_free"},
        {"assistant_id": d, "contact_type": "phone", "phone_country": "NL"}]})
    assert batch.status_code == 202, batch.text
    info = batch.json()["info"]
    assert [a["index"] for a in info["accepted"]] == [1], info
    assert [(r["index"], r["error"]["fields"]) for r in info["rejected"]] == [
        (0, {"phone_number_type": "NL has no toll_free numbers: one of local"})]
    documents = api.put("/v0/providers/twilio/regulatory/NL", headers=tenant.headers,
                        json={"number_type": "toll_free"})
    assert documents.status_code == 422 and "number_type" in documents.json()["error"]["fields"]
    with db.read() as session:  # the refused request reserved nothing
        assert session.execute(select(Contact).where(Contact.assistant_id == b)).first() is None


def test_a_purchase_refused_with_21649_marks_the_entry_stale_and_is_fetched_first(
    rsettings, api, db, make_tenant, sandbox: SandboxControl, spawn
):
    tenant = make_tenant(assistants=2)
    refresher = RegulationsRefresher(db, rsettings)
    refresher.run()
    # Twilio starts wanting a bundle for US local numbers; our fresh entry does not know yet.
    sandbox.set_regulation("US", "local", bundle=True, address="none")
    answer = post(api, tenant, tenant.assistant_ids[0], "US")
    assert answer.status_code == 202
    spawn("worker", rsettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    got = api.get(f"/v0/assistant/{tenant.assistant_ids[0]}/contact/{answer.json()['info']['id']}",
                  headers=tenant.headers).json()["info"]
    assert got["status"] == "failed" and got["error"]["code"] == "regulatory_bundle_refused"
    found = entries(db)
    assert found[("US", "local", "business")].stale and found[("US", "local", "individual")].stale
    assert not found[("US", "toll_free", "business")].stale

    # Stale: fetched first by the next pass, though well within the TTL.
    assert refresher.run()["refreshed"] == 1
    us = entries(db)[("US", "local", "business")]
    assert (us.bundle, us.stale) == (True, False)
    refused = wait_for(lambda: (r := post(api, tenant, tenant.assistant_ids[1], "US"))
                       .status_code == 422 and r)
    assert code(refused) == "regulatory_bundle_required"
    # Contacts the API let through meanwhile (its copy judged by the built-in table) failed
    # with 21649 too, but an entry that says a bundle is needed agrees with that: not stale.
    assert not entries(db)[("US", "local", "business")].stale


def test_a_search_for_a_list_twilio_no_longer_has_marks_the_entry_stale(
    make_settings, rsettings, api, db, make_tenant, spawn
):
    """An earlier pass found NL selling mobile numbers; Twilio has dropped the list since
    (the sandbox has none: its search answers 404). A contact the API let through by that
    entry fails with `number_type_not_sold`, having bought nothing, and the entry is marked
    stale: the next pass fetches it first and records it not sold, and the API then refuses
    NL mobile numbers."""
    now = datetime.now(UTC)
    with db.write() as session:
        for end_user in ("business", "individual"):
            store.put(session, "NL", "mobile", end_user, Rule(False, "none"), None, now, True)
    tenant = make_tenant(assistants=2)
    first, later = tenant.assistant_ids
    answer = post(api, tenant, first, "NL", "mobile")
    assert answer.status_code == 202, answer.text
    spawn("worker", rsettings, "--concurrency", "2")
    wait_for(lambda: all_terminal(db, 1), timeout=60)
    got = api.get(f"/v0/assistant/{first}/contact/{answer.json()['info']['id']}",
                  headers=tenant.headers).json()["info"]
    assert got["status"] == "failed" and got["error"]["code"] == "number_type_not_sold", got
    assert "NL" in got["error"]["message"] and "mobile" in got["error"]["message"]
    found = entries(db)
    assert found[("NL", "mobile", "business")].stale
    assert found[("NL", "mobile", "individual")].stale

    with_nl = make_settings(**{**rsettings.model_dump(), "twilio_regulations_countries": "NL"})
    RegulationsRefresher(db, with_nl).run()
    nl = entries(db)[("NL", "mobile", "business")]
    assert (nl.sold, nl.stale) == (False, False)
    refused = wait_for(lambda: (r := post(api, tenant, later, "NL", "mobile"))
                       .status_code == 422 and r)
    assert refused.json()["error"]["fields"] == {
        "phone_number_type": "NL has no mobile numbers: one of local"}


def test_a_refusal_marks_stale_only_the_entries_it_contradicts(db):
    now = datetime.now(UTC)
    with db.write() as session:
        store.put(session, "GB", "local", "business", Rule(True, "any"), "RN1", now)
        store.put(session, "GB", "local", "individual", Rule(False, "none"), None, now)
        store.put(session, "DE", "local", "business", Rule(True, "local"), "RN2", now)
        assert store.mark_stale(session, "GB", "local", "bundle") == 1  # 21649
        assert store.mark_stale(session, "GB", "local", "address") == 1  # 21631: "any" too
        assert store.mark_stale(session, "DE", "local", "address") == 0  # agrees: local
    found = entries(db)
    assert found[("GB", "local", "business")].stale and found[("GB", "local", "individual")].stale
    assert not found[("DE", "local", "business")].stale


def test_with_no_usable_entry_the_builtin_table_judges(rsettings, api, db, make_tenant):
    tenant = make_tenant(assistants=4)
    a, b, c, d = tenant.assistant_ids
    assert entries(db) == {}
    assert code(post(api, tenant, a, "GB")) == "regulatory_bundle_required"
    assert code(post(api, tenant, a, "DE", "mobile")) == "regulatory_bundle_required"
    assert post(api, tenant, b, "US").status_code == 202

    # An entry past the maximum age is not trusted (a refresh that keeps failing), nor is a
    # stale one: the built-in table judges GB mobile numbers, whatever the entry says.
    now = datetime.now(UTC)
    nothing = Rule(False, "none")
    with db.write() as session:
        for eut in ("individual", "business"):
            store.put(session, "GB", "mobile", eut, nothing, None,
                      now - timedelta(seconds=rsettings.twilio_regulations_max_age_s + 60))
            store.put(session, "DE", "mobile", eut, nothing, None, now)
            store.put(session, "FR", "mobile", eut, nothing, None, now)  # usable
        store.mark_stale(session, "DE", "mobile", "bundle")
    # The API's copy has reloaded once the usable FR entry judges...
    wait_for(lambda: post(api, tenant, d, "FR", "mobile").status_code == 202)
    # ... and the old and the stale entries do not.
    assert code(post(api, tenant, c, "GB", "mobile")) == "regulatory_bundle_required"
    assert code(post(api, tenant, c, "DE", "mobile")) == "regulatory_bundle_required"


def test_the_oldest_entrys_age_is_a_gauge(rsettings, api, db):
    def gauge() -> float | None:
        for line in api.get("/metrics").text.splitlines():
            if line.startswith("provisioner_regulations_oldest_age_seconds "):
                return float(line.split()[-1])
        return None

    assert gauge() == 0.0
    RegulationsRefresher(db, rsettings).run()
    assert 0.0 <= gauge() < 30
    age(db, 5000, country="DE")
    assert 5000 <= gauge() < 5030


def test_beat_runs_the_refresh_on_its_schedule(make_settings, rsettings, db, spawn):
    from worker.runtime.celery_app import create_celery

    settings = make_settings(**{**rsettings.model_dump(), "twilio_regulations_countries": "GB",
                                "twilio_regulations_interval_s": 1.0})
    entry = create_celery(settings).conf.beat_schedule["refresh-regulations"]
    assert (entry["task"], entry["schedule"]) == ("worker.tasks.refresh_regulations", 1.0)
    spawn("worker", settings, "--concurrency", "2")
    spawn("beat", settings)
    wait_for(lambda: len(entries(db)) == 8, timeout=90)  # GB: four types, two end-user types
    assert all(r.bundle for r in entries(db).values())
