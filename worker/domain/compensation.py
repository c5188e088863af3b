"""When failing a contact needs no clean-up at the providers, and which attempts count.

Compensation deletes what a contact's creating requests made. The step journal counts an
attempt only when it may have made something; so when every counted attempt belongs to a
read-only step (a number search), the journal proves that no creating request was ever sent,
and the contact can fail at once, with nothing to delete and no provider call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from worker.domain.contacts import READ_ONLY_STEPS

# Permanent error codes whose answer shows the provider refused the request before acting on
# it (it authenticated nobody, or allowed nothing): the request made nothing.
REFUSED_BEFORE_ACTING = frozenset({"auth_failed"})


class JournalStep(Protocol):
    name: str
    attempts: int


def attempt_made_nothing(*, sent: bool, code: str | None) -> bool:
    """An attempt that sent no request, or whose request was refused before the provider
    acted on it, made nothing: the journal takes it back (it does not count it)."""
    return not sent or code in REFUSED_BEFORE_ACTING


def nothing_created(steps: Iterable[JournalStep]) -> bool:
    """The journal proves no creating request was ever sent for the contact: every attempt
    it counts is a read-only step's (or there are none)."""
    return all(step.attempts == 0 or step.name in READ_ONLY_STEPS for step in steps)
