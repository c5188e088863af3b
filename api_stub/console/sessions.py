"""The console's sessions: a signed, expiring cookie naming a session that Redis keeps.

The cookie holds a random session id signed with a timestamp by `itsdangerous`, under a key
derived from the console token (changing the token signs everyone out). A session is good
while its signature is younger than `PROVISIONER_CONSOLE_SESSION_S` and its id is still in
Redis (kept there as long, with a TTL): signing out deletes the id, so a copy of the cookie
stops working too. Each session's CSRF token is an HMAC of its id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import redis
from itsdangerous import BadSignature, URLSafeTimedSerializer

KEY = "provisioner:console-session:{}"


class SessionStoreUnavailable(Exception):
    """Redis did not answer: no session can be started, checked or ended now."""


class Sessions:
    def __init__(self, token: str, redis_client: Any, lifetime_s: int) -> None:
        secret = token.encode()
        self.lifetime_s = lifetime_s
        self._redis = redis_client
        self._signer = URLSafeTimedSerializer(
            hmac.new(secret, b"console-session-key", hashlib.sha256).digest(),
            salt="console-session",
        )
        self._csrf_key = hmac.new(secret, b"console-csrf-key", hashlib.sha256).digest()

    def start(self) -> str:
        """A new session; answers the cookie's value."""
        session_id = secrets.token_urlsafe(24)
        try:
            self._redis.set(KEY.format(session_id), "1", ex=self.lifetime_s)
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc
        return self._signer.dumps(session_id)

    def session_id(self, cookie: str) -> str | None:
        """The id of the live session `cookie` names; None if it is forged, expired or
        signed out."""
        if not cookie:
            return None
        try:
            session_id = self._signer.loads(cookie, max_age=self.lifetime_s)
        except BadSignature:  # SignatureExpired among them
            return None
        if not isinstance(session_id, str):
            return None
        try:
            alive = self._redis.exists(KEY.format(session_id))
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc
        return session_id if alive else None

    def end(self, session_id: str) -> None:
        """Revoke the session: its cookie, and every copy of it, is refused from now on."""
        try:
            self._redis.delete(KEY.format(session_id))
        except redis.RedisError as exc:
            raise SessionStoreUnavailable from exc

    def csrf(self, session_id: str) -> str:
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()
