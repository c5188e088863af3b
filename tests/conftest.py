"""Root fixtures."""

pytest_plugins = ["support.fixtures"]
