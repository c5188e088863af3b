"""The business rules in plain Python: states, validation, pricing, idempotency, retry, the
public views. Imports nothing of this project outside `worker.domain`, and no framework."""
