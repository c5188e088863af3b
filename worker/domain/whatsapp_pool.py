"""The shared pool of WhatsApp senders: which contacts get a dedicated sender and which a
pool sender, and the rule a pool sender's routes keep.

Meta caps the senders of one WhatsApp Business Account (about 2 before the business is
verified, 20 after), so one sender per contact cannot serve a bulk onboarding. As in the
original service, a contact may instead be given a sender of the platform's shared pool: the
assistant is then reached on that sender's number, and the contact's `user_whatsapp_number`
is the route that tells the assistant apart from the other assistants on the same sender. A
user (one `user_whatsapp_number`) therefore has at most one assistant per pool sender; a
second assistant of the same user takes another pool sender.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class SenderMode(StrEnum):
    DEDICATED = "dedicated"  # its own number and sender (under the account's WABA, or ours)
    SHARED = "shared"  # a pool sender, routed by its user's WhatsApp number


class PoolSenderStatus(StrEnum):
    GROWING = "growing"  # its number and sender are being made by the contact that needed it
    ONLINE = "online"  # serves routes
    FAILED = "failed"  # its onboarding failed; its number and sender are released


# The error codes a pool contact may end with.
POOL_EXHAUSTED = "whatsapp_pool_exhausted"  # every pool sender holds a route of this user
POOL_TIMEOUT = "whatsapp_pool_timeout"  # its pool sender did not come online within the bound

POOL_TAG_PREFIX = "pool:"


def pool_tag(pool_sender_id: int) -> str:
    """The tag (a Twilio number's FriendlyName) of a pool sender's number: the pool's
    resources belong to the platform, not to a contact."""
    return f"{POOL_TAG_PREFIX}{pool_sender_id}"


def is_pool_tag(tag: str | None) -> bool:
    return bool(tag) and str(tag).startswith(POOL_TAG_PREFIX)


def choose_mode(
    requested: str | None, *, own_waba: bool, dedicated_live: int, own_waba_max: int
) -> SenderMode:
    """The sender a new WhatsApp contact gets: the one it asked for (`whatsapp_sender`), else
    dedicated while the account's own WABA has room (fewer than `own_waba_max` live dedicated
    senders), else shared. An account without a WABA of its own takes the pool: the
    platform's WABA is shared by every account and cannot give each contact a sender."""
    if requested is not None:
        return SenderMode(requested)
    if own_waba and dedicated_live < own_waba_max:
        return SenderMode.DEDICATED
    return SenderMode.SHARED


def is_shared(request: Mapping[str, Any] | None) -> bool:
    """Whether a normalised WhatsApp request was given a pool sender."""
    return (request or {}).get("whatsapp_sender") == SenderMode.SHARED.value


def poll_delay(polls: int, base_s: float, max_s: float) -> float:
    """How long a contact waiting for a growing pool sender waits before it looks again."""
    return min(base_s * 2 ** min(polls, 20), max_s)
