"""The provider-call counter and the queue keys that the queue-depth gauge reads."""

from __future__ import annotations

import httpx
import pytest
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client import REGISTRY

from worker.metrics import queue_keys, step_timer
from worker.providers.errors import ProviderError


def calls(provider: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "provisioner_provider_calls_total", {"provider": provider, "status": status}
    )
    return value or 0.0


def test_provider_calls_are_counted_by_provider_and_status(numbers_client) -> None:
    answers = iter([httpx.Response(200, json={"available_phone_numbers": []}),
                    httpx.Response(503, json={"code": 20003, "message": "down"})])
    client = numbers_client(lambda request: next(answers))
    ok, unavailable = calls("twilio", "200"), calls("twilio", "503")
    client.search_available("US")
    with pytest.raises(ProviderError):
        client.search_available("US")
    assert calls("twilio", "200") == ok + 1
    assert calls("twilio", "503") == unavailable + 1


def test_a_timeout_is_counted_as_timeout(numbers_client) -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    before = calls("twilio", "timeout")
    with pytest.raises(ProviderError):
        numbers_client(timeout).search_available("US")
    assert calls("twilio", "timeout") == before + 1


def test_step_timer_observes_a_step_that_raises() -> None:
    labels = {"type": "phone", "step": "unit_test_step"}
    before = REGISTRY.get_sample_value("provisioner_step_duration_seconds_count", labels) or 0
    with pytest.raises(RuntimeError), step_timer("phone", "unit_test_step"):
        raise RuntimeError("provider exploded")
    assert REGISTRY.get_sample_value("provisioner_step_duration_seconds_count", labels) == (
        before + 1
    )


def test_queue_keys_are_kombus_lists_for_every_priority() -> None:
    # Kombu's own naming, so a kombu upgrade that changes it fails here, not in production.
    channel = Channel.__new__(Channel)
    expected = {Channel._q_for_pri(channel, "bulk", p) for p in PRIORITY_STEPS}
    assert set(queue_keys("bulk")) == expected
