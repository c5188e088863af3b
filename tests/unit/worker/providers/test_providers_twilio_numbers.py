"""TwilioNumbers' own logic over a mock transport: forwarding URLs, paging, the buy loop."""

from __future__ import annotations

import random
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from worker.providers import Permanent, Retryable, TwilioNumbers, forward_voice_url

FORWARD = "https://twimlets.com/forward?PhoneNumber={user_phone}"


def number(sid: str, phone: str, tag: str, voice_url: str | None = None, created: str = "") -> dict:
    return {
        "sid": sid,
        "phone_number": phone,
        "friendly_name": tag,
        "voice_url": voice_url,
        "date_created": created or "Thu, 01 Jan 2026 00:00:00 +0000",
    }


def test_forward_voice_url_encodes_the_number() -> None:
    assert forward_voice_url(FORWARD, "+14155551234") == (
        "https://twimlets.com/forward?PhoneNumber=%2B14155551234"
    )


@pytest.mark.parametrize("user_phone", [None, ""])
def test_forward_voice_url_without_user_phone_is_none(user_phone: str | None) -> None:
    assert forward_voice_url(FORWARD, user_phone) is None


def test_find_follows_next_page_uri_and_matches_exactly(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        page = request.url.params.get("Page", "0")
        if page == "0":
            return httpx.Response(
                200,
                json={
                    "incoming_phone_numbers": [number("PN1", "+15550000001", "c_1")],
                    "next_page_uri": request.url.path + "?FriendlyName=c_1&Page=1&PageToken=PA1",
                },
            )
        return httpx.Response(
            200,
            json={
                "incoming_phone_numbers": [
                    number("PN2", "+15550000002", "c_1"),
                    number("PN3", "+15550000003", "c_10"),  # a looser match than we asked for
                ],
                "next_page_uri": None,
            },
        )

    found = numbers_client(handler).find(friendly_name="c_1")
    assert [n.sid for n in found] == ["PN1", "PN2"]
    assert requests[0].url.params["FriendlyName"] == "c_1"
    assert requests[1].url.params["PageToken"] == "PA1"
    assert requests[1].url.host == "api.twilio.test"


def test_buy_posts_the_documented_form(numbers_client: Callable[..., TwilioNumbers]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=number("PN1", "+15550000001", "c_1", "https://v"))

    bought = numbers_client(handler).buy("+15550000001", "c_1", "https://v")
    assert bought.sid == "PN1" and bought.voice_url == "https://v"
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == f"/2010-04-01/Accounts/AC{'0' * 32}/IncomingPhoneNumbers.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "PhoneNumber": ["+15550000001"],
        "FriendlyName": ["c_1"],
        "VoiceUrl": ["https://v"],
    }


class FakeTwilio:
    """Just enough of Twilio's numbers API for the buy loop. The search lists `available` as
    it was a moment ago: numbers in `sold` are listed but no longer for sale."""

    def __init__(self, available: list[str], sold: set[str]) -> None:
        self.available = available
        self.sold = sold
        self.owned: list[dict] = []
        self.buys: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/Local.json"):
            listed = [{"phone_number": p} for p in self.available]
            return httpx.Response(200, json={"available_phone_numbers": listed})
        if path.endswith("/IncomingPhoneNumbers.json") and request.method == "GET":
            tag = request.url.params.get("FriendlyName")
            mine = [n for n in self.owned if n["friendly_name"] == tag]
            return httpx.Response(200, json={"incoming_phone_numbers": mine, "next_page_uri": None})
        if path.endswith("/IncomingPhoneNumbers.json") and request.method == "POST":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            phone = form["PhoneNumber"]
            self.buys.append(phone)
            if phone in self.sold:
                return httpx.Response(
                    400, json={"code": 21422, "message": "not available", "status": 400}
                )
            self.sold.add(phone)
            created = number(
                f"PN{len(self.owned)}", phone, form["FriendlyName"], form.get("VoiceUrl")
            )
            self.owned.append(created)
            return httpx.Response(201, json=created)
        if request.method == "POST":  # update
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            sid = path.rsplit("/", 1)[1].removesuffix(".json")
            for n in self.owned:
                if n["sid"] == sid:
                    n["voice_url"] = form.get("VoiceUrl") or None
                    return httpx.Response(200, json=n)
        if request.method == "DELETE":
            sid = path.rsplit("/", 1)[1].removesuffix(".json")
            self.owned = [n for n in self.owned if n["sid"] != sid]
            return httpx.Response(204)
        return httpx.Response(404, json={"code": 20404, "message": "nope", "status": 404})


def test_ensure_number_moves_on_when_a_candidate_was_just_sold(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    candidates = [f"+1555000000{i}" for i in range(5)]
    fake = FakeTwilio(candidates, sold=set(candidates[:3]))
    for seed in range(10):  # whatever order the candidates are tried in
        fake.owned, fake.buys, fake.sold = [], [], set(candidates[:3])
        client = numbers_client(fake, rng=random.Random(seed))
        bought = client.ensure_number("c_1", "US")
        assert bought.phone_number in candidates[3:]
        assert fake.buys[-1] == bought.phone_number
        assert set(fake.buys[:-1]) <= set(candidates[:3])


def test_ensure_number_gives_up_after_a_bounded_number_of_sold_candidates(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    listed = [f"+1555000000{i}" for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Local.json"):
            return httpx.Response(
                200, json={"available_phone_numbers": [{"phone_number": p} for p in listed]}
            )
        if request.method == "GET":
            return httpx.Response(200, json={"incoming_phone_numbers": [], "next_page_uri": None})
        return httpx.Response(400, json={"code": 21422, "message": "not available", "status": 400})

    client = numbers_client(handler, max_buy_attempts=4)
    with pytest.raises(Retryable) as caught:
        client.ensure_number("c_1", "US")
    assert caught.value.code == "number_unavailable"


def test_ensure_number_with_empty_search_is_no_numbers_available(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    fake = FakeTwilio([], sold=set())
    with pytest.raises(Permanent) as caught:
        numbers_client(fake).ensure_number("c_1", "US")
    assert caught.value.code == "no_numbers_available"


def test_ensure_number_adopts_and_fixes_voice_url(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    fake = FakeTwilio([], sold=set())
    fake.owned.append(number("PN9", "+15550000009", "c_1", "https://old"))
    adopted = numbers_client(fake).ensure_number("c_1", "US", "https://new")
    assert (adopted.sid, adopted.voice_url) == ("PN9", "https://new")
    assert fake.buys == []


def test_ensure_number_keeps_the_oldest_of_duplicates_and_releases_the_rest(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    fake = FakeTwilio([], sold=set())
    fake.owned.append(
        number("PNb", "+15550000002", "c_1", created="Fri, 02 Jan 2026 00:00:00 +0000")
    )
    fake.owned.append(
        number("PNa", "+15550000001", "c_1", created="Thu, 01 Jan 2026 00:00:00 +0000")
    )
    kept = numbers_client(fake).ensure_number("c_1", "US")
    assert kept.sid == "PNa"
    assert [n["sid"] for n in fake.owned] == ["PNa"]


def test_release_tagged_counts_numbers_already_gone(
    numbers_client: Callable[..., TwilioNumbers],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(
                200,
                json={
                    "incoming_phone_numbers": [
                        number("PN1", "+15550000001", "c_1"),
                        number("PN2", "+15550000002", "c_1"),
                    ]
                },
            )
        if request.url.path.endswith("PN1.json"):
            return httpx.Response(404, json={"code": 20404, "message": "gone", "status": 404})
        return httpx.Response(204)

    assert numbers_client(handler).release_tagged("c_1") == 2
