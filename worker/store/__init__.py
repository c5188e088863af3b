"""Persistence: the SQLAlchemy models, migrations helpers and the transactions that keep the
invariants. May import `worker.domain`, `worker.settings`; never app, runtime, cli or api_stub."""
