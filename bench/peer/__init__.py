"""The peer: the provisioning service a competent team would write in a day with our packages.

A FastAPI route that inserts the contact with the SQLAlchemy ORM, commits and calls
`task.delay()`; a Celery task (threads pool) that makes the same two provider calls as our phone
pipeline, with `autoretry_for`, then updates the row and the balance. None of our guarantees: no
lease, no journal, no idempotency, no reservation, no ledger, no outbox, no rate limit. It exists
only to be measured beside ours by `bench/versus.py` (`make bench-peer`).

Configured by environment: PEER_DATABASE_URL, PEER_REDIS_URL, PEER_SANDBOX_URL.
"""
