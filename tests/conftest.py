"""Root fixtures.

The provider sandbox (`sandbox_url`, `sandbox`) comes first and stands alone; other
fixtures follow below it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.testing import SandboxControl, SandboxProcess


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """Base URL of one provider sandbox subprocess shared by the whole session."""
    with SandboxProcess() as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[SandboxControl]:
    """The session's sandbox, reset (state, faults, stats, sinks) for this test."""
    with SandboxControl(sandbox_url) as control:
        control.reset()
        yield control


# --- other fixtures --------------------------------------------------------------------

pytest_plugins = ["support.fixtures", "support.pipeline"]
