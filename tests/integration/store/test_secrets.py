"""API keys are stored only as hashes and never appear in logs."""

from __future__ import annotations

import structlog
from sqlalchemy import text

from worker.logging import mask_phone, redact
from worker.store.models import Base


def test_api_key_is_not_stored_in_clear(db, tenant):
    with db.read() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(text(f"SELECT * FROM {table.name}")):
                assert all(tenant.api_key not in str(value) for value in row), table.name


def test_api_key_is_not_logged_by_requests(client, tenant):
    with structlog.testing.capture_logs(processors=[redact]) as logs:
        client.get("/v0/credits", headers=tenant.headers)
        client.get("/v0/credits", headers={"Authorization": "Bearer wrong-key"})
        client.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                    json={"contact_type": "phone"}, headers=tenant.headers)
    assert tenant.api_key not in repr(logs)


def test_redaction_drops_secrets_and_masks_people():
    event = redact(None, "info", {
        "event": "x", "api_key": "cp_secret", "webhook_secret": "whsec_x",
        "auth_token": "tok", "user_phone": "+14155552671", "first_name": "Ada",
        "request": {"user_whatsapp_number": "+442071838750", "last_name": "Lovelace"},
    })
    assert event["api_key"] == event["webhook_secret"] == event["auth_token"] == "[redacted]"
    assert event["user_phone"] == mask_phone("+14155552671") == "+1415*****71"
    assert event["first_name"] == "A***"
    assert event["request"] == {"user_whatsapp_number": "+4420******50", "last_name": "L***"}
