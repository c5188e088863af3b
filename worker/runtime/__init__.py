"""The Celery side: the app and its tasks, the provisioning pipeline and its steps, provider
budgets, webhook delivery, the worker group. May import app, store, providers, domain."""
