"""Provider credentials made for tests: an RSA service-account key (registered with the
sandbox by its public key), and Microsoft app registrations."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@functools.cache
def _rsa_key(seed: int) -> rsa.RSAPrivateKey:
    # One key per seed for the session: RSA key generation is slow on a shared machine.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict[str, Any]
    public_key_pem: str

    @property
    def client_email(self) -> str:
        return str(self.info["client_email"])


def service_account_key(name: str = "provisioner", seed: int = 0) -> ServiceAccountKey:
    """A key file's JSON, as the Google Cloud console hands it out."""
    key = _rsa_key(seed)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    email = f"{name}@sandbox-project.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": "sandbox-project",
        "private_key_id": f"{seed:040x}",
        "private_key": private_pem,
        "client_email": email,
        "client_id": "1" * 21,
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return ServiceAccountKey(info, public_pem)


def register_service_account(
    sandbox_url: str, key: ServiceAccountKey, admin_subjects: list[str] | None = None
) -> None:
    body: dict[str, Any] = {"public_key_pem": key.public_key_pem}
    if admin_subjects is not None:
        body["admin_subjects"] = admin_subjects
    response = httpx.put(
        f"{sandbox_url}/_sandbox/google/service-accounts/{key.client_email}", json=body
    )
    response.raise_for_status()


@dataclass(frozen=True)
class MicrosoftApp:
    tenant_id: str
    client_id: str
    client_secret: str


def register_app(sandbox_url: str, tenant_id: str | None = None) -> MicrosoftApp:
    app = MicrosoftApp(
        tenant_id=tenant_id or str(uuid.uuid4()),
        client_id=str(uuid.uuid4()),
        client_secret=f"secret~{uuid.uuid4().hex}",
    )
    rotate_app_secret(sandbox_url, app, app.client_secret)
    return app


def rotate_app_secret(sandbox_url: str, app: MicrosoftApp, secret: str) -> None:
    """Register `secret` as the app's only secret (tokens issued before are revoked)."""
    response = httpx.put(
        f"{sandbox_url}/_sandbox/microsoft/apps/{app.client_id}",
        json={"client_secret": secret, "tenant_id": app.tenant_id},
    )
    response.raise_for_status()


def expire_tokens(sandbox_url: str) -> None:
    httpx.post(f"{sandbox_url}/_sandbox/tokens/expire").raise_for_status()
