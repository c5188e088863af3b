"""Production clients of the providers we provision from (Twilio numbers, Twilio WhatsApp
senders, Google Workspace directory), and `Providers`, the set a worker process holds.

One module per provider; errors classified once, in the client. May import `worker.domain` and
the top-level modules (settings, metrics); never store, app, runtime or cli."""

from __future__ import annotations

from worker.providers.errors import (
    AUTH_FAILED,
    EMAIL_TAKEN,
    INVALID_REQUEST,
    NO_NUMBERS_AVAILABLE,
    NUMBER_UNAVAILABLE,
    SENDER_REJECTED,
    NotFound,
    Permanent,
    ProviderError,
    RateLimited,
    Retryable,
)
from worker.providers.google_directory import (
    DirectoryUser,
    GoogleDirectory,
    StaticTokenSource,
    TokenSource,
)
from worker.providers.http import Closing
from worker.providers.twilio_numbers import IncomingNumber, TwilioNumbers, forward_voice_url
from worker.providers.twilio_senders import (
    CREATING,
    FAILED_STATUSES,
    OFFLINE,
    ONLINE,
    ONLINE_STATUSES,
    Sender,
    TwilioSenders,
    is_failed,
    is_online,
)
from worker.settings import Settings

__all__ = [
    "AUTH_FAILED",
    "CREATING",
    "EMAIL_TAKEN",
    "FAILED_STATUSES",
    "INVALID_REQUEST",
    "NO_NUMBERS_AVAILABLE",
    "NUMBER_UNAVAILABLE",
    "OFFLINE",
    "ONLINE",
    "ONLINE_STATUSES",
    "SENDER_REJECTED",
    "DirectoryUser",
    "GoogleDirectory",
    "IncomingNumber",
    "NotFound",
    "Permanent",
    "ProviderError",
    "Providers",
    "RateLimited",
    "Retryable",
    "Sender",
    "StaticTokenSource",
    "TokenSource",
    "TwilioNumbers",
    "TwilioSenders",
    "forward_voice_url",
    "is_failed",
    "is_online",
]


class Providers(Closing):
    """The three clients, built once per worker process and closed at its shutdown."""

    def __init__(
        self, *, numbers: TwilioNumbers, senders: TwilioSenders, directory: GoogleDirectory
    ) -> None:
        self.numbers = numbers
        self.senders = senders
        self.directory = directory

    @classmethod
    def from_settings(
        cls, settings: Settings, *, google_token_source: TokenSource | None = None
    ) -> Providers:
        """Clients for the base URLs and credentials in `settings` (all three at the sandbox
        when `sandbox_url` is set)."""
        return cls(
            numbers=TwilioNumbers.from_settings(settings),
            senders=TwilioSenders.from_settings(settings),
            directory=GoogleDirectory.from_settings(settings, google_token_source),
        )

    def close(self) -> None:
        """Close every client's connection pool."""
        for client in (self.numbers, self.senders, self.directory):
            client.close()
