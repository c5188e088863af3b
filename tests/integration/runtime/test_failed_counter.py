"""`provisioner_contacts_total{outcome="failed"}`, the counter the failed-rate alert divides."""

from __future__ import annotations

def test_failed_contacts_are_counted(pipeline, service, make_tenant, sandbox):
    from prometheus_client import REGISTRY
    from support.pipeline import drive, submit

    labels = {"type": "phone", "outcome": "failed"}
    before = REGISTRY.get_sample_value("provisioner_contacts_total", labels) or 0.0
    sandbox.reset(inventory_per_country=1)  # the second contact finds no number: failed
    tenant = make_tenant(assistants=2)
    body = {"contact_type": "phone", "phone_country": "US"}
    assert drive(pipeline, submit(service, tenant, body, tenant.assistant_ids[0])) == "active"
    assert drive(pipeline, submit(service, tenant, body, tenant.assistant_ids[1])) == "failed"
    assert REGISTRY.get_sample_value("provisioner_contacts_total", labels) == before + 1
