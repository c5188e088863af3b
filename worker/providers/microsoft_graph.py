"""Microsoft 365 accounts through Microsoft Graph v1.0: users create, get, list by tag, delete;
`assignLicense`; `subscribedSkus`; and the idempotent `ensure_user`, `ensure_license` and
`delete_tagged` steps.

A user we create carries our tag (the contact id) in `onPremisesExtensionAttributes`
(`extensionAttribute15`, writable for cloud-only users, at most 1,024 characters; `employeeId`
holds only 16), so a retried step tells "the account an earlier attempt created" from "an
address someone else already has", and compensation finds what a lost answer hid. Graph
returns it only on `$select`, and filters on it only as an "advanced query"
(`ConsistencyLevel: eventual` with `$count=true`).
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from worker.providers.errors import (
    AUTH_FAILED,
    EMAIL_TAKEN,
    INVALID_REQUEST,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    UNEXPECTED_RESPONSE,
    NotFound,
    Permanent,
    RateLimited,
    Retryable,
)
from worker.providers.google_directory import BearerAuth, TokenSource
from worker.providers.http import ProviderClient, json_object, parse_retry_after

PROVIDER = "microsoft"
USERS_PATH = "/v1.0/users"
SKUS_PATH = "/v1.0/subscribedSkus"
TAG_ATTRIBUTE = "extensionAttribute15"
LICENSE_UNAVAILABLE = "license_unavailable"
SELECT = "id,userPrincipalName,displayName,assignedLicenses,onPremisesExtensionAttributes"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!#$%*+-=?@^_~"


def raise_for_graph(response: httpx.Response) -> None:
    """Raise the error a non-2xx Graph response means; the only place that reads Graph's
    status codes and error codes (`{"error": {"code", "message"}}`)."""
    if response.is_success:
        return
    status = response.status_code
    error = json_object(response).get("error")
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "") or None
    message = str(error.get("message") or response.reason_phrase or f"HTTP {status}")

    def permanent(ours: str) -> Permanent:
        return Permanent(PROVIDER, ours, message, status, provider_code=code)

    if status == 429 or code in ("TooManyRequests", "activityLimitReached"):
        raise RateLimited(
            PROVIDER,
            RATE_LIMITED,
            message,
            status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            provider_code=code,
        )
    if status >= 500 or status == 408:
        raise Retryable(PROVIDER, PROVIDER_UNAVAILABLE, message, status, provider_code=code)
    if status in (401, 403):  # InvalidAuthenticationToken, Authorization_RequestDenied
        raise permanent(AUTH_FAILED)
    if status == 404 or code == "Request_ResourceNotFound":
        raise NotFound(PROVIDER, message, status, provider_code=code)
    lowered = message.lower()
    if "same value for property userprincipalname" in lowered or (
        "already exists" in lowered and "userprincipalname" in lowered
    ):
        raise permanent(EMAIL_TAKEN)
    if "license" in lowered and ("available" in lowered or "usage location" in lowered):
        # "Subscription ... does not have any available licenses", or no usage location.
        raise permanent(LICENSE_UNAVAILABLE)
    if status < 400:
        raise permanent(UNEXPECTED_RESPONSE)
    raise permanent(INVALID_REQUEST)


@dataclass(frozen=True)
class GraphUser:
    """A Microsoft 365 user; `tag` is our contact id if we created it, else None."""

    id: str
    user_principal_name: str
    tag: str | None
    sku_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Sku:
    sku_id: str
    part_number: str
    enabled: int
    consumed: int


class MicrosoftGraph(ProviderClient):
    """Client of Graph's users collection and licences, for one tenant's token source."""

    provider = PROVIDER

    def __init__(
        self,
        *,
        base_url: str,
        token_source: TokenSource,
        timeout: httpx.Timeout,
        max_connections: int = 20,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            timeout=timeout,
            max_connections=max_connections,
            auth=BearerAuth(token_source),
            raise_for_status=raise_for_graph,
            transport=transport,
        )
        self.token_source = token_source

    # Operations -------------------------------------------------------------------------

    def create_user(
        self,
        user_principal_name: str,
        given_name: str,
        family_name: str,
        tag: str,
        *,
        usage_location: str,
    ) -> GraphUser:
        """Create the enabled account with a strong random password that nobody ever sees
        (changed at first sign-in), tagged with `tag`."""
        body = {
            "accountEnabled": True,
            "displayName": f"{given_name} {family_name}",
            "givenName": given_name,
            "surname": family_name,
            "mailNickname": user_principal_name.split("@", 1)[0],
            "userPrincipalName": user_principal_name,
            "usageLocation": usage_location,
            "passwordProfile": {"forceChangePasswordNextSignIn": True, "password": _password()},
            "onPremisesExtensionAttributes": {TAG_ATTRIBUTE: tag},
        }
        return _parse_user(self._request_json("POST", USERS_PATH, json=body))

    def get_user(self, key: str) -> GraphUser:
        """The user whose id or userPrincipalName is `key` (NotFound if none)."""
        return _parse_user(
            self._request_json("GET", self._user_path(key), params={"$select": SELECT})
        )

    def find_tagged(self, tag: str) -> list[GraphUser]:
        """Every user carrying `tag` (normally none or one)."""
        found: list[GraphUser] = []
        params = {
            "$filter": f"onPremisesExtensionAttributes/{TAG_ATTRIBUTE} eq '{_odata(tag)}'",
            "$select": SELECT,
            "$count": "true",
        }
        pages = self._pages(USERS_PATH, params, lambda page: page.get("@odata.nextLink"))
        for page in pages:
            found += [_parse_user(u) for u in page.get("value") or [] if isinstance(u, dict)]
        return found

    def delete_user(self, key: str) -> None:
        """Delete the user (NotFound if there is none). Graph keeps it 30 days in deleted
        items, where its address stays taken until it is purged or restored."""
        self._request("DELETE", self._user_path(key))

    def assign_license(self, user_id: str, sku_id: str) -> None:
        body = {"addLicenses": [{"skuId": sku_id, "disabledPlans": []}], "removeLicenses": []}
        self._request_json("POST", f"{self._user_path(user_id)}/assignLicense", json=body)

    def subscribed_skus(self) -> list[Sku]:
        body = self._request_json("GET", SKUS_PATH)
        skus = []
        for item in body.get("value") or []:
            if not isinstance(item, dict) or not isinstance(item.get("skuId"), str):
                continue
            prepaid = item.get("prepaidUnits") if isinstance(item.get("prepaidUnits"), dict) else {}
            skus.append(
                Sku(
                    sku_id=item["skuId"],
                    part_number=str(item.get("skuPartNumber") or ""),
                    enabled=int(prepaid.get("enabled") or 0),
                    consumed=int(item.get("consumedUnits") or 0),
                )
            )
        return skus

    def resolve_sku(self, sku: str) -> Sku | None:
        """The tenant's subscribed SKU named by id (a GUID) or part number (`SPE_E3`)."""
        for candidate in self.subscribed_skus():
            if candidate.sku_id.lower() == sku.lower() or candidate.part_number == sku:
                return candidate
        return None

    # Idempotent steps -------------------------------------------------------------------

    def ensure_user(
        self,
        user_principal_name: str,
        given_name: str,
        family_name: str,
        tag: str,
        *,
        usage_location: str,
        look_up: bool = True,
    ) -> GraphUser:
        """The account `user_principal_name` tagged `tag`, created if it does not exist
        yet; Permanent("email_taken") if the address is anyone else's. Safe to repeat."""
        if look_up:
            try:
                return _ours(self.get_user(user_principal_name), tag)
            except NotFound:
                pass
        try:
            return self.create_user(
                user_principal_name, given_name, family_name, tag, usage_location=usage_location
            )
        except Permanent as exc:
            if exc.code != EMAIL_TAKEN:
                raise
            conflict = exc
        try:  # created meanwhile, perhaps by an attempt of ours whose answer was lost
            return _ours(self.get_user(user_principal_name), tag)
        except NotFound as exc:
            raise Retryable(
                PROVIDER, EMAIL_TAKEN, "address in use but not readable yet", conflict.status
            ) from exc

    def ensure_license(self, user_id: str, sku_id: str) -> GraphUser:
        """The user with `sku_id` assigned (assigning it if it is not yet)."""
        user = self.get_user(user_id)
        if sku_id.lower() not in {s.lower() for s in user.sku_ids}:
            self.assign_license(user_id, sku_id)
        return user

    def delete_tagged(self, tag: str, user_principal_name: str | None = None) -> int:
        """Delete every user carrying `tag` (and `user_principal_name`, if it carries it);
        the number deleted. Someone else's account is never touched; gone already is done."""
        users = {u.id: u for u in self.find_tagged(tag)}
        if user_principal_name is not None:
            try:
                user = self.get_user(user_principal_name)
            except NotFound:
                pass
            else:
                if user.tag == tag:
                    users[user.id] = user
        deleted = 0
        for user_id in users:
            try:
                self.delete_user(user_id)
            except NotFound:
                continue
            deleted += 1
        return deleted

    def _user_path(self, key: str) -> str:
        return f"{USERS_PATH}/{quote(key, safe='@')}"

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        # Filters on extension attributes are advanced queries; harmless on other calls.
        headers = {"ConsistencyLevel": "eventual", **kwargs.pop("headers", {})}
        return super()._request(method, url, headers=headers, **kwargs)


def is_sku_id(value: str) -> bool:
    return bool(_GUID.match(value))


def _ours(user: GraphUser, tag: str) -> GraphUser:
    if user.tag != tag:
        raise Permanent(PROVIDER, EMAIL_TAKEN, "the address belongs to another account", 409)
    return user


def _parse_user(body: dict[str, Any]) -> GraphUser:
    user_id, upn = body.get("id"), body.get("userPrincipalName")
    if not isinstance(user_id, str) or not isinstance(upn, str):
        raise Permanent(PROVIDER, UNEXPECTED_RESPONSE, "response is not a user")
    attributes = body.get("onPremisesExtensionAttributes")
    tag = attributes.get(TAG_ATTRIBUTE) if isinstance(attributes, dict) else None
    licences = body.get("assignedLicenses") or []
    sku_ids = frozenset(
        str(item["skuId"]) for item in licences if isinstance(item, dict) and item.get("skuId")
    )
    return GraphUser(
        id=user_id, user_principal_name=upn, tag=str(tag) if tag else None, sku_ids=sku_ids
    )


def _odata(value: str) -> str:
    return value.replace("'", "''")


def _password(length: int = 24) -> str:
    """Random, with every character class Entra's complexity rule asks for (3 of 4)."""
    while True:
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(not c.isalnum() for c in password)
        ):
            return password
