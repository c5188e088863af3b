"""Which sender a WhatsApp contact gets, and the plans of a pool contact."""

from __future__ import annotations

import pytest

from worker.domain.contacts import ContactType, FirstRun, deprovision_plan, step_plan
from worker.domain.errors import InvalidRequest
from worker.domain.validation import validate_contact_request
from worker.domain.whatsapp_pool import SenderMode, choose_mode, is_pool_tag, poll_delay, pool_tag

BODY = {"contact_type": "whatsapp", "user_whatsapp_number": "+14155552671"}


def test_an_account_without_a_waba_of_its_own_takes_the_pool():
    assert choose_mode(None, own_waba=False, dedicated_live=0, own_waba_max=20) is SenderMode.SHARED


def test_the_own_waba_gives_dedicated_senders_while_it_has_room():
    assert choose_mode(None, own_waba=True, dedicated_live=19, own_waba_max=20) is (
        SenderMode.DEDICATED)
    assert choose_mode(None, own_waba=True, dedicated_live=20, own_waba_max=20) is (
        SenderMode.SHARED)


def test_the_request_may_force_either():
    assert choose_mode("dedicated", own_waba=False, dedicated_live=0, own_waba_max=0) is (
        SenderMode.DEDICATED)
    assert choose_mode("shared", own_waba=True, dedicated_live=0, own_waba_max=20) is (
        SenderMode.SHARED)


def test_whatsapp_sender_is_validated_and_named():
    assert validate_contact_request({**BODY, "whatsapp_sender": "shared"}).fields[
        "whatsapp_sender"] == "shared"
    assert validate_contact_request(BODY).fields["whatsapp_sender"] is None
    with pytest.raises(InvalidRequest) as refused:
        validate_contact_request({**BODY, "whatsapp_sender": "pool"})
    assert set(refused.value.fields) == {"whatsapp_sender"}


def test_a_pool_contact_has_its_own_plans_and_no_first_run_hint():
    shared = {**BODY, "whatsapp_sender": "shared", "phone_country": "US"}
    assert step_plan(ContactType.WHATSAPP, shared) == ("assign_pool_sender",)
    assert deprovision_plan(ContactType.WHATSAPP, shared) == ("release_pool_route",)
    assert FirstRun.of("whatsapp", shared, bulk=False) is None
    dedicated = {**shared, "whatsapp_sender": "dedicated"}
    assert step_plan(ContactType.WHATSAPP, dedicated)[0] == "find_number"
    assert deprovision_plan(ContactType.WHATSAPP, dedicated) == ("delete_sender", "release_number")
    assert FirstRun.of("whatsapp", dedicated, bulk=False) is not None


def test_pool_tags_and_polls():
    assert pool_tag(7) == "pool:7" and is_pool_tag("pool:7") and not is_pool_tag("ct_x")
    assert [poll_delay(n, 0.5, 3.0) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
