"""Chaos: mixed contacts through the batch API while the providers misbehave, the worker is
frozen (SIGSTOP past the dead-after time, then SIGCONT, while a second worker has taken
over) once and SIGKILLed three times, Redis is killed and restarted and the database fails (every backend
terminated three times on PostgreSQL, a writer lock held 5 s on SQLite) while the API keeps
taking contacts; then every contract invariant, and the recovery time: from the last fault to
the last terminal contact (docs/recovery.md says what bounds it). A third account
provisions Microsoft 365 mailboxes in its own tenant (msal tokens, Graph) meanwhile. Half the
WhatsApp senders must verify (a code sent by SMS to the number, read and submitted by the
worker) and every one goes through Twilio's review. A share of the first account's phone
contacts are GB and DE numbers, bought with the regulatory bundle and address the account set
through the API. Its WhatsApp contacts ask for dedicated senders; a fourth account's go to the
shared pool of senders (two assistants per user, so the pool grows to two senders while the
faults run), and each must end on a pool sender that holds only its own number and sender.

CI runs a bounded form (`PROVISIONER_TEST_CHAOS_CONTACTS`, default 150); `make chaos` runs 500.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, func, or_, select, text
from sqlalchemy.engine import make_url
from standardwebhooks.webhooks import Webhook
from support.credentials import register_app
from support.invariants import check_invariants
from support.pipeline import all_terminal, statuses, wait_for
from support.services import serve_in_thread

from api_stub.app import create_app
from worker.providers.google_directory import GoogleDirectory
from worker.domain.whatsapp_pool import pool_tag
from worker.store.models import Contact, PoolSender

pytestmark = pytest.mark.chaos

CONTACTS = int(os.environ.get("PROVISIONER_TEST_CHAOS_CONTACTS", "150"))
SEED = int(os.environ.get("PROVISIONER_TEST_CHAOS_SEED", str(int(time.time()))))
M365 = max(6, CONTACTS // 10)  # Microsoft 365 email contacts of the third account
POOLED = max(6, CONTACTS // 10)  # WhatsApp contacts of the fourth account, on the shared pool
WAVE = max(10, CONTACTS // 10)  # phone contacts posted for the freeze
CHUNK = 100
TAKEN_EVERY = 7  # of the email items: a permanent failure (email_taken), compensated
FOREIGN = "someone-else"
FAULTS = {
    "error_rate": 0.15,
    "timeout_rate": 0.03,
    "drop_after_commit_rate": 0.05,
    "latency_ms": 20,
    "rate_limit_per_s": 200,
    "sender_online_after_s": 0.3,
}
NO_FAULTS = {
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "drop_after_commit_rate": 0.0,
    "latency_ms": 0,
    "rate_limit_per_s": 0,
}


def items_for(assistant_ids: list[int], regulated: bool = False) -> list[dict]:
    """One contact per assistant, the types mixed: phone, email, whatsapp in turn (a WhatsApp
    one with a dedicated sender). Every `TAKEN_EVERY`-th email address belongs to someone
    else already (see `taken`). With `regulated`, one phone contact in four is a GB number
    and one in four a DE one."""
    items = []
    for n, assistant in enumerate(assistant_ids):
        kind = ("phone", "email", "whatsapp")[n % 3]
        item: dict = {"assistant_id": assistant, "contact_type": kind}
        if kind == "phone":
            item["phone_country"] = (
                {1: "GB", 3: "DE"}.get((n // 3) % 4, "US") if regulated else "US"
            )
            if n % 2:
                item["user_phone"] = "+14155550123"
        elif kind == "email":
            item.update(email_local=f"chaos.{assistant}", first_name="Ada", last_name="Lovelace")
        else:
            item["user_whatsapp_number"] = "+14155550199"
            item["whatsapp_sender"] = "dedicated"
        items.append(item)
    return items


def pooled_items(assistant_ids: list[int]) -> list[dict]:
    """WhatsApp contacts on the shared pool: each user has two assistants, so two senders."""
    return [{"assistant_id": a, "contact_type": "whatsapp",
             "user_whatsapp_number": f"+1415555{3000 + n // 2}"}
            for n, a in enumerate(assistant_ids)]


def test_contract_invariants_hold_under_chaos(
    chaos_settings, chaos_redis, spawn, db, make_tenant, sandbox
):
    settings = chaos_settings
    # Two accounts: the second one's contacts and events must stay out of the first one's view.
    main = make_tenant(credits_cents=CONTACTS * 300, assistants=CONTACTS)
    other = make_tenant(credits_cents=10_000, assistants=3, name="other")
    m365 = make_tenant(credits_cents=M365 * 100, assistants=M365, name="m365")
    pooled = make_tenant(credits_cents=POOLED * 1_000, assistants=POOLED, name="pooled")
    app = register_app(sandbox.url)

    # Some addresses are someone else's: those contacts must fail cleanly (email_taken),
    # leaving the other owner's account alone.
    taken = [i["email_local"] for i in items_for(main.assistant_ids, regulated=True)
             if i["contact_type"] == "email"][::TAKEN_EVERY]
    with GoogleDirectory.from_settings(settings) as directory:
        for local in taken:
            directory.insert_user(f"{local}@{settings.email_domain}", "Other", "Owner", FOREIGN)

    probe = make_tenant(credits_cents=10_000, assistants=3, name="probe")
    wave = make_tenant(credits_cents=WAVE * 100, assistants=WAVE, name="wave")
    spawn("beat", settings)
    worker = spawn("worker", settings, "--concurrency", "16")
    with serve_in_thread(create_app(settings, db=db)) as api, httpx.Client(
        base_url=api, timeout=60
    ) as http:
        secrets = {}
        for tenant, sink in ((main, "main"), (other, "other")):
            answer = http.put("/v0/webhook", headers=tenant.headers,
                              json={"url": f"{sandbox.url}/_sandbox/sink/{sink}"})
            assert answer.status_code == 200, answer.text
            secrets[sink] = answer.json()["info"]["secret"]
        answer = http.put("/v0/providers/microsoft", headers=m365.headers, json={
            "domain": "contoso.example", "tenant_id": app.tenant_id,
            "client_id": app.client_id, "client_secret": app.client_secret,
            "license_sku": "SPE_E3"})
        assert answer.status_code == 200, answer.text
        documents = regulatory_documents(settings, sandbox)
        for country, docs in documents.items():
            answer = http.put(f"/v0/providers/twilio/regulatory/{country}",
                              headers=main.headers, json={"number_type": "local", **docs})
            assert answer.status_code == 200, answer.text
        m365_items = [{"assistant_id": a, "contact_type": "email", "email_local": f"m365.{a}",
                       "first_name": "Grace", "last_name": "Hopper"} for a in m365.assistant_ids]

        answer = httpx.put(f"{sandbox.url}/_sandbox/twilio/senders/onboarding", json={
            "verification_rate": 0.5, "verifying_s": 0.2, "review_s": 0.2, "seed": 27})
        assert answer.status_code == 200, answer.text
        sandbox.set_faults(**FAULTS)
        started = time.monotonic()
        batches = []
        for tenant, items in ((main, items_for(main.assistant_ids, regulated=True)),
                              (other, items_for(other.assistant_ids)),
                              (m365, m365_items),
                              (pooled, pooled_items(pooled.assistant_ids))):
            for i in range(0, len(items), CHUNK):
                answer = http.post("/v0/contact/batch", headers=tenant.headers,
                                   json={"items": items[i : i + CHUNK]})
                assert answer.status_code == 202, answer.text
                info = answer.json()["info"]
                assert info["rejected"] == []
                batches.append((tenant, info["batch_id"]))
        total = CONTACTS + 3 + M365 + POOLED + len(probe.assistant_ids)
        probes = iter(probe.assistant_ids)
        answers: Counter[int] = Counter()

        def post_during_fault() -> None:
            """A client posting while the database fails: 202, or 503 with Retry-After (then
            the same request again, with its Idempotency-Key), never anything else."""
            assistant = next(probes)
            key = f"probe-{assistant}"
            body = {"contact_type": "phone", "phone_country": "US"}
            for _ in range(60):
                answer = http.post(f"/v0/assistant/{assistant}/contact", json=body,
                                   headers={**probe.headers, "Idempotency-Key": key})
                answers[answer.status_code] += 1
                assert answer.status_code in (202, 503), answer.text
                if answer.status_code == 202:
                    return
                assert answer.headers["Retry-After"].isdigit()
                time.sleep(0.2)
            raise AssertionError("the API never recovered from the database fault")

        def terminal() -> int:
            return sum(s in ("active", "failed") for s in statuses(db).values())

        # Three crashes, spread over the run and each at a random moment (the seed is
        # printed), each followed by a fresh worker.
        rng = random.Random(SEED)
        kills: list[tuple[datetime, set[str]]] = []
        next_faults: list[datetime] = []
        for kill in range(3):
            wait_for(lambda k=kill: terminal() >= total * (k + 1) // 5, timeout=240, every=0.05)
            time.sleep(rng.uniform(0.0, 2.0))
            worker.kill()
            kills.append((datetime.now(UTC), {
                cid for cid, s in statuses(db).items() if s not in ("active", "failed")}))
            if kill == 1:  # the Redis restart and the database faults follow at once
                next_faults.append(datetime.now(UTC))
            if kill == 1:
                chaos_redis.restart()  # mid-run, while the worker is down: queues may be lost
            worker = spawn("worker", settings, "--concurrency", "16")
            last_fault = datetime.now(UTC)
            if kill == 1:
                for _ in range(3):  # database faults, while contacts run
                    database_fault(db, post_during_fault)
                    last_fault = datetime.now(UTC)
        # Then a freeze (a long GC pause, a frozen VM), on a wave of new contacts: the worker
        # SIGSTOPped past the dead-after time while a second one takes its contacts over,
        # then SIGCONTed while that one is still at work. Both run on to the end.
        answer = http.post("/v0/contact/batch", headers=wave.headers, json={"items": [
            {"assistant_id": a, "contact_type": "phone", "phone_country": "US"}
            for a in wave.assistant_ids]})
        assert answer.status_code == 202, answer.text
        total += len(wave.assistant_ids)

        def leased() -> int:  # the wave's contacts leased
            with db.read() as session:
                return session.execute(select(func.count()).select_from(Contact).where(
                    Contact.account_id == wave.account_id,
                    Contact.lease_owner.is_not(None))).scalar_one()

        frozen = worker
        missed: Counter[str] = Counter()  # why each try was let go
        for _ in range(50):
            wait_for(lambda: leased() >= 1, timeout=60, every=0.02)
            os.killpg(frozen.proc.pid, signal.SIGSTOP)
            # Frozen, it holds what it holds: if it finished those contacts between the look
            # and the stop, it holds none, and the freeze would prove nothing; let it go on.
            # On SQLite, a worker frozen inside a write transaction holds the one writer lock
            # for as long as it is frozen (docs/recovery.md): nobody can take anything over,
            # and it finishes its contacts itself once resumed. That freeze is the database's,
            # not the one tested here (PostgreSQL's SKIP LOCKED and idle timeout bound it).
            held, free = leased() >= 1, writer_free(db)
            if held and free:
                break
            missed["no wave contact held" if not held else "the writer lock held"] += 1
            os.killpg(frozen.proc.pid, signal.SIGCONT)
            # Let it run on a moment first: stopped again at once, it is still in the same
            # write transaction (or just out of it), and every try would see the same moment.
            time.sleep(rng.uniform(0.005, 0.03))
        else:
            raise AssertionError(f"the worker never held a wave contact when frozen: {missed}")
        freeze_at = datetime.now(UTC)

        def wave_taken_over() -> int:
            with db.read() as session:
                return session.execute(select(func.sum(Contact.takeovers)).where(
                    Contact.account_id == wave.account_id)).scalar_one() or 0

        try:
            worker = spawn("worker", settings, "--concurrency", "16")
            # Resumed once its contacts were taken over (beat's liveness pass, the dead-after
            # time after its last heartbeat), not after a fixed sleep that a loaded machine's
            # late pass outlasts.
            bound = settings.worker_dead_after_s + settings.liveness_interval_s + 60
            try:
                wait_for(lambda: wave_taken_over() >= 1, timeout=bound, every=0.2)
            except AssertionError:
                raise AssertionError(
                    f"no contact of the frozen worker was taken over within {bound:.0f} s"
                ) from None
        finally:
            os.killpg(frozen.proc.pid, signal.SIGCONT)
        last_fault = datetime.now(UTC)
        # The fault after each kill: the next kill, the restart after the second, the freeze.
        faults_after = [kills[1][0], next_faults[0], freeze_at]
        kills = [(at, open_then, after) for (at, open_then), after in zip(kills, faults_after)]

        # Then the faults stop, and everything must reach a terminal state.
        sandbox.set_faults(**NO_FAULTS)
        wait_for(lambda: all_terminal(db, total), timeout=600, every=0.2)

        def unswept() -> int:  # ended or active, and not yet listed once more by the sweep
            with db.read() as session:
                return session.execute(select(func.count()).select_from(Contact).where(
                    Contact.status.in_(("active", "failed", "deleted")),
                    or_(Contact.swept_status.is_(None),
                        Contact.swept_status != Contact.status))).scalar_one()

        wait_for(lambda: unswept() == 0, timeout=120, every=0.5)
        elapsed = time.monotonic() - started
        with db.read() as session:
            last_terminal = session.execute(select(func.max(Contact.updated_at))).scalar_one()
        if last_terminal.tzinfo is None:
            last_terminal = last_terminal.replace(tzinfo=UTC)
        recovery = (last_terminal - last_fault).total_seconds()
        # Each kill: from the kill to the last of the contacts open then reaching its end; if
        # the next fault came first, only that it took longer than the time to that fault.
        kill_times = []
        with db.read() as session:
            for at, open_then, next_fault in kills:
                ends = session.execute(select(Contact.updated_at).where(
                    Contact.id.in_(sorted(open_then)))).scalars().all()
                ends = [e if e.tzinfo else e.replace(tzinfo=UTC) for e in ends]
                last = max(((e - at).total_seconds() for e in ends), default=0.0)
                cap = (next_fault - at).total_seconds()
                kill_times.append(f"{last:.1f}" if last <= cap else f">{cap:.1f} (next fault)")
        measured = [float(t) for t in kill_times if not t.startswith(">")]

        # Every invariant of the database and the providers.
        by_status = check_invariants(db, sandbox, foreign_tags=frozenset({FOREIGN}))
        assert by_status.get("failed", 0) >= len(taken)
        assert [u["tag"] for u in sandbox.resources()["users"]].count(FOREIGN) == len(taken)
        with db.read() as session:
            codes = Counter(session.execute(
                select(Contact.error_code).where(Contact.status == "failed")).scalars())
        assert codes["email_taken"] == len(taken), codes
        graph_users = [u for u in sandbox.resources()["users"] if u["provider"] == "microsoft"]
        every = statuses(db)
        m365_active = {cid for cid in statuses_of(http, m365) if every[cid] == "active"}
        # One licensed user per active Microsoft contact, none for a failed one, no doubles.
        assert sorted(u["tag"] for u in graph_users) == sorted(m365_active)
        assert all(u["licenses"] for u in graph_users)
        # Takeovers of the contacts open at a kill (the kills'), and of the wave's (the freeze's).
        killed = sorted(set().union(*(open_then for _, open_then, _ in kills)))
        with db.read() as session:
            takeovers = session.execute(select(func.sum(Contact.takeovers)).where(
                Contact.id.in_(killed))).scalar_one() or 0
            frozen_taken = session.execute(select(func.sum(Contact.takeovers)).where(
                Contact.account_id == wave.account_id)).scalar_one() or 0
        assert takeovers >= 1, "the kills interrupted no contact: the test proved nothing"
        assert frozen_taken >= 1, "the freeze held no contact: it proved nothing"
        # WhatsApp senders that had to verify went ONLINE: the worker read and sent the code.
        senders = sandbox.resources()["senders"]
        verified = [s for s in senders if s["verification"] and s["status"] == "ONLINE"]
        assert verified, "no sender passed through verification"
        with db.read() as session:
            pool = session.execute(select(PoolSender.id, PoolSender.status)).all()
        online_pool = {pool_tag(i) for i, status in pool if status == "online"}
        assert {s["tag"] for s in senders} <= {
            c for c, st in every.items() if st == "active"} | online_pool
        # The pooled account's contacts: each user on two pool senders (none left failed).
        pooled_active = {c: a for c, a in statuses_of(http, pooled).items()
                         if every[c] == "active"}
        with db.read() as session:
            pooled_rows = session.execute(select(Contact).where(
                Contact.id.in_(sorted(pooled_active)))).scalars().all()
        by_user = defaultdict(list)
        for contact in pooled_rows:
            assert contact.pool_sender_id is not None, contact.id
            by_user[contact.request["user_whatsapp_number"]].append(contact.pool_sender_id)
        assert all(len(set(ids)) == len(ids) for ids in by_user.values()), by_user
        assert pooled_active, "no pooled contact went active"
        # Every GB and DE number was bought with its country's bundle and address.
        regulated = Counter()
        for number in sandbox.resources()["phone_numbers"]:
            if number["country"] in documents:
                docs = documents[number["country"]]
                assert (number["bundle_sid"], number["address_sid"]) == (
                    docs["bundle_sid"], docs["address_sid"]), number
                regulated[number["country"]] += 1
            else:
                assert number["bundle_sid"] is None, number
        assert regulated["GB"] and regulated["DE"], regulated
        stats = sandbox.stats()["by_status"]

        # Batches report done, and another account cannot see them.
        for tenant, batch_id in batches:
            info = http.get(f"/v0/contact/batch/{batch_id}", headers=tenant.headers).json()["info"]
            assert info["done"] is True
            stranger = other if tenant is main else main
            assert http.get(f"/v0/contact/batch/{batch_id}",
                            headers=stranger.headers).status_code == 404

        # Nothing of the other account is visible to the first one.
        mine = statuses_of(http, main)
        theirs = statuses_of(http, other)
        assert len(mine) == CONTACTS and len(theirs) == 3
        for contact_id, assistant in theirs.items():
            answer = http.get(f"/v0/assistant/{assistant}/contact/{contact_id}",
                              headers=main.headers)
            assert answer.status_code == 404

        # Every terminal contact's event reaches its own account's sink, signed, one webhook-id.
        def delivered(sink: str, expected: set[str]) -> bool:
            return expected <= {orjson.loads(r["body"])["data"]["id"]
                                for r in sandbox.sink(sink)}

        wait_for(lambda: delivered("main", set(mine)) and delivered("other", set(theirs)),
                 timeout=180, every=0.5)
        for sink, expected in (("main", set(mine)), ("other", set(theirs))):
            ids_by_contact: dict[str, set[str]] = defaultdict(set)
            verifier = Webhook(secrets[sink])
            for receipt in sandbox.sink(sink):
                payload = verifier.verify(receipt["body"], receipt["headers"])
                contact_id = payload["data"]["id"]
                assert contact_id in expected, "an event of another account"
                assert payload["type"] == f"contact.{payload['data']['status']}"
                ids_by_contact[contact_id].add(receipt["headers"]["webhook-id"])
            assert all(len(ids) == 1 for ids in ids_by_contact.values()), ids_by_contact

    print(  # the counts the issue asks for; visible with -s or in the CI log on failure
        f"\nchaos: {total} contacts in {elapsed:.0f} s, {dict(by_status)}, "
        f"failed by code {dict(codes)}, regulated numbers {dict(regulated)}, senders verified "
        f"by code {len(verified)} of {len(senders)}, pool senders "
        f"{dict(Counter(st for _, st in pool))}, provider answers {stats}, worker kills 3 "
        f"({takeovers} leases taken over), worker freezes 1 ({frozen_taken} taken over while "
        f"frozen), redis restarts 1, database faults 3 "
        f"(API answers {dict(answers)})"
        f"\nrecovery: {recovery:.1f} s from the last fault to the last terminal contact"
        f"\nkills at random moments (seed {SEED}): kill to the last contact open at it "
        f"terminal {', '.join(kill_times)} s, worst measured "
        f"{f'{max(measured):.1f} s' if measured else 'n/a'}"
    )


def regulatory_documents(settings, sandbox) -> dict[str, dict[str, str]]:
    """An approved GB and DE local bundle and an address in each country, made at the
    sandbox's Twilio as a customer makes them (before the faults start)."""
    auth = (settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
    made = {}
    with httpx.Client(base_url=sandbox.url, auth=auth, timeout=10) as twilio:
        for country, postal_code in (("GB", "SW1A 1AA"), ("DE", "10117")):
            bundle = twilio.post("/v2/RegulatoryCompliance/Bundles", data={
                "FriendlyName": "Chaos", "Email": "ops@chaos.example", "IsoCountry": country,
                "NumberType": "local", "EndUserType": "business"}).json()["sid"]
            twilio.post(f"/v2/RegulatoryCompliance/Bundles/{bundle}",
                        data={"Status": "pending-review"}).raise_for_status()
            sandbox.approve_bundle(bundle)
            address = twilio.post(
                f"/2010-04-01/Accounts/{settings.twilio_account_sid}/Addresses.json",
                data={"CustomerName": "Chaos", "Street": "1 Main Street", "City": "Town",
                      "Region": "R", "PostalCode": postal_code, "IsoCountry": country},
            ).json()["sid"]
            made[country] = {"bundle_sid": bundle, "address_sid": address}
    return made


def writer_free(db) -> bool:
    """Whether a write can start now: on SQLite, no other connection holds the writer lock."""
    if not db.is_sqlite:
        return True
    probe = sqlite3.connect(make_url(db.url).database, timeout=0.2, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


def database_fault(db, during) -> None:
    """Fail the database under everyone's feet and call `during` meanwhile: on PostgreSQL
    terminate every other backend of the test database (the API's, the workers', beat's); on
    SQLite hold its writer lock for 5 s."""
    if db.is_sqlite:
        path = make_url(db.url).database
        holder = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(5.0, holder.execute, ["ROLLBACK"])
        release.start()
        try:
            during()
        finally:
            release.join()
            holder.close()
        return
    admin = create_engine(db.url, poolclass=None)
    try:
        with admin.connect() as connection:
            connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            connection.commit()
    finally:
        admin.dispose()
    during()


def statuses_of(http: httpx.Client, tenant) -> dict[str, int]:
    found = {}
    for assistant in tenant.assistant_ids:
        answer = http.get(f"/v0/assistant/{assistant}/contact", headers=tenant.headers)
        assert answer.status_code == 200
        for contact in answer.json()["info"]:
            assert contact["status"] in ("active", "failed")
            found[contact["id"]] = assistant
    return found
