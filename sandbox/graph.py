"""Microsoft Graph v1.0 emulation: users create, get, list (with `$filter` on
`userPrincipalName` or an `onPremisesExtensionAttributes` attribute), delete;
`assignLicense`; `subscribedSkus`.

Real base URL: https://graph.microsoft.com. `Authorization: Bearer <token>`: a token issued by
the sandbox's Microsoft token endpoint selects its tenant (users are per tenant); an expired or
revoked one is refused with 401 `InvalidAuthenticationToken`; any other non-empty value is
the tenant `common`. Graph's error envelope; passwords kept only as a salted hash.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.errors import graph_error
from sandbox.http import bearer_token
from sandbox.identity import identity

router = APIRouter()

BASE = "/v1.0"
# Each tenant starts with these subscriptions (real SKU ids), `DEFAULT_UNITS` licences each.
DEFAULT_SKUS = {
    "SPE_E3": "05e9a617-0261-4cee-bb44-138d3ef5d965",
    "O365_BUSINESS_PREMIUM": "f245ecc8-75af-4f8e-b61f-27d8114de5f3",
}
DEFAULT_UNITS = 10_000
_UPN = re.compile(
    r"^(?P<local>[A-Za-z0-9._'+-]{1,64})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}$"
)
_FILTER = re.compile(r"^\s*(?P<prop>[A-Za-z0-9/]+)\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*$")
DEFAULT_PROPS = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)  # fmt: skip


@dataclass
class GraphUser:
    tenant: str
    fields: dict[str, Any]
    password_hash: str
    licences: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> str:
        return str(self.fields["id"])

    @property
    def upn(self) -> str:
        return str(self.fields["userPrincipalName"])

    def attribute(self, path: str) -> Any:
        value: Any = self.fields
        for part in path.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
        return value


@dataclass
class Subscription:
    sku_id: str
    part_number: str
    enabled: int = DEFAULT_UNITS


class GraphState:
    """Tenants' users and subscriptions; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.users: dict[str, GraphUser] = {}
        self.skus: dict[str, dict[str, Subscription]] = {}

    def subscriptions(self, tenant: str) -> dict[str, Subscription]:
        if tenant not in self.skus:
            self.skus[tenant] = {
                sku_id: Subscription(sku_id, part) for part, sku_id in DEFAULT_SKUS.items()
            }
        return self.skus[tenant]

    def consumed(self, tenant: str, sku_id: str) -> int:
        return sum(1 for u in self.users.values() if u.tenant == tenant and sku_id in u.licences)

    def find(self, tenant: str, key: str) -> GraphUser | None:
        key = key.lower()
        for user in self.users.values():
            if user.tenant == tenant and (user.id == key or user.upn.lower() == key):
                return user
        return None

    def snapshot(self) -> list[GraphUser]:
        with self._lock:
            return copy.deepcopy(list(self.users.values()))


def graph_state(request: Request) -> GraphState:
    value: GraphState = request.app.state.graph
    return value


def _tenant(request: Request) -> str | Response:
    token = bearer_token(request)
    if token is None:
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
    state, issued = identity(request).state(token)
    if state == "expired":
        return graph_error(
            401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
        )
    if state == "revoked" or (issued is not None and issued.kind != "microsoft"):
        return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
    return issued.tenant if issued is not None else "common"


def _not_found(key: str) -> JSONResponse:
    return graph_error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects "
        "are not present.",
    )


def _bad(message: str, code: str = "Request_BadRequest") -> JSONResponse:
    return graph_error(400, code, message)


def _render(user: GraphUser, select: str | None) -> dict[str, Any]:
    body = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity"}
    names = [s.strip() for s in select.split(",")] if select else list(DEFAULT_PROPS)
    for name in names:
        if name == "assignedLicenses":
            body[name] = [{"skuId": s, "disabledPlans": []} for s in user.licences]
        else:
            body[name] = copy.deepcopy(user.fields.get(name))
    return body


async def _json(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@router.post(BASE + "/users")
async def create_user(request: Request) -> Response:
    tenant = _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    body = await _json(request)
    if body is None:
        return _bad("Unable to read JSON request payload.", "BadRequest")
    for name in ("displayName", "mailNickname", "userPrincipalName"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            return _bad(f"Invalid value specified for property '{name}' of resource 'User'.")
    if not isinstance(body.get("accountEnabled"), bool):
        return _bad("Invalid value specified for property 'accountEnabled' of resource 'User'.")
    upn = body["userPrincipalName"]
    if not _UPN.match(upn):
        return _bad("Property userPrincipalName is invalid.")
    profile = body.get("passwordProfile")
    password = profile.get("password") if isinstance(profile, dict) else None
    if not isinstance(password, str) or len(password) < 8 or len(password) > 256:
        return _bad("The specified password does not comply with password complexity requirements.")
    attributes = body.get("onPremisesExtensionAttributes")
    if attributes is not None and not isinstance(attributes, dict):
        return _bad("Invalid value for onPremisesExtensionAttributes.")
    state = graph_state(request)
    fields = {k: v for k, v in body.items() if k != "passwordProfile"}
    fields["id"] = str(uuid.uuid4())
    fields["mail"] = None
    fields["onPremisesExtensionAttributes"] = {
        f"extensionAttribute{i}": (attributes or {}).get(f"extensionAttribute{i}")
        for i in range(1, 16)
    }
    with state._lock:
        if state.find(tenant, upn) is not None:
            return _bad(
                "Another object with the same value for property userPrincipalName already exists."
            )
        user = GraphUser(tenant, fields, _hash(password))
        state.users[user.id] = user
        answer = _render(user, None)
    return JSONResponse(answer, status_code=201)


@router.get(BASE + "/users")
async def list_users(request: Request) -> Response:
    tenant = _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    params = request.query_params
    state = graph_state(request)
    predicate = None
    raw_filter = params.get("$filter")
    if raw_filter:
        match = _FILTER.match(raw_filter)
        if match is None:
            return _bad("Unsupported or invalid query filter clause.", "Request_UnsupportedQuery")
        prop, value = match["prop"], match["value"].replace("''", "'")
        advanced = prop.startswith("onPremisesExtensionAttributes/")
        if advanced and (
            request.headers.get("consistencylevel", "").lower() != "eventual"
            or params.get("$count") != "true"
        ):
            return _bad(
                f"Unsupported or invalid query filter clause specified for property '{prop}' of "
                "resource 'User'.",
                "Request_UnsupportedQuery",
            )
        if prop == "userPrincipalName":
            predicate = lambda u: u.upn.lower() == value.lower()  # noqa: E731
        elif advanced:
            predicate = lambda u: u.attribute(prop) == value  # noqa: E731
        else:
            return _bad("Unsupported query.", "Request_UnsupportedQuery")
    try:
        top = int(params.get("$top", "100"))
        skip = int(params.get("$skiptoken", "0"))
    except ValueError:
        return _bad("Invalid page parameters.")
    with state._lock:
        users = sorted(
            (u for u in state.users.values() if u.tenant == tenant),
            key=lambda u: u.created_at,
        )
        users = [u for u in users if predicate is None or predicate(u)]
        page = [_render(u, params.get("$select")) for u in users[skip : skip + max(1, top)]]
    body: dict[str, Any] = {"@odata.context": "users", "value": page}
    if params.get("$count") == "true":
        body["@odata.count"] = len(users)
    if skip + top < len(users):
        query = [(k, v) for k, v in params.multi_items() if k != "$skiptoken"]
        query.append(("$skiptoken", str(skip + top)))
        body["@odata.nextLink"] = str(request.url.replace_query_params(**dict(query)))
    return JSONResponse(body)


@router.get(BASE + "/users/{key}")
async def get_user(request: Request, key: str) -> Response:
    tenant = _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    state = graph_state(request)
    with state._lock:
        user = state.find(tenant, key)
        if user is None:
            return _not_found(key)
        answer = _render(user, request.query_params.get("$select"))
    return JSONResponse(answer)


@router.delete(BASE + "/users/{key}")
async def delete_user(request: Request, key: str) -> Response:
    tenant = _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    state = graph_state(request)
    with state._lock:
        user = state.find(tenant, key)
        if user is None:
            return _not_found(key)
        del state.users[user.id]  # its licences return to the pool
    return Response(status_code=204)


@router.post(BASE + "/users/{key}/assignLicense")
async def assign_license(request: Request, key: str) -> Response:
    tenant = _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    body = await _json(request)
    adds = body.get("addLicenses") if body is not None else None
    removes = body.get("removeLicenses") if body is not None else None
    if not isinstance(adds, list) or not isinstance(removes, list):
        return _bad("Invalid request: addLicenses and removeLicenses are required.")
    state = graph_state(request)
    with state._lock:
        user = state.find(tenant, key)
        if user is None:
            return _not_found(key)
        if adds and not user.fields.get("usageLocation"):
            return _bad("License assignment cannot be done for user with invalid usage location.")
        subscriptions = state.subscriptions(tenant)
        for item in adds:
            sku_id = str(item.get("skuId", "")).lower() if isinstance(item, dict) else ""
            subscription = subscriptions.get(sku_id)
            if subscription is None:
                return _bad(f"License {sku_id} does not correspond to a valid company License.")
            if sku_id in user.licences:
                continue
            if state.consumed(tenant, sku_id) >= subscription.enabled:
                return _bad(f"Subscription with SKU {sku_id} does not have any available licenses.")
            user.licences.append(sku_id)
        for sku_id in removes:
            if str(sku_id).lower() in user.licences:
                user.licences.remove(str(sku_id).lower())
        answer = _render(user, None)
    return JSONResponse(answer)


@router.get(BASE + "/subscribedSkus")
async def subscribed_skus(request: Request) -> Response:
    tenant = _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    state = graph_state(request)
    with state._lock:
        value = [
            {
                "capabilityStatus": "Enabled",
                "appliesTo": "User",
                "consumedUnits": state.consumed(tenant, s.sku_id),
                "id": f"{tenant}_{s.sku_id}",
                "prepaidUnits": {"enabled": s.enabled, "suspended": 0, "warning": 0},
                "skuId": s.sku_id,
                "skuPartNumber": s.part_number,
                "servicePlans": [],
            }
            for s in state.subscriptions(tenant).values()
        ]
    return JSONResponse({"@odata.context": "subscribedSkus", "value": value})


def _hash(password: str) -> str:
    salt = secrets.token_hex(8)
    return f"sha256${salt}${hashlib.sha256((salt + password).encode()).hexdigest()}"


@router.put("/_sandbox/microsoft/tenants/{tenant}/skus/{sku_id}")
async def set_units(request: Request, tenant: str, sku_id: str) -> Response:
    """Set how many licences of a subscribed SKU the tenant has (`{"enabled": n}`)."""
    body = await _json(request)
    enabled = body.get("enabled") if body is not None else None
    if not isinstance(enabled, int) or enabled < 0:
        return JSONResponse({"detail": "enabled: a whole number >= 0"}, status_code=422)
    state = graph_state(request)
    with state._lock:
        subscription = state.subscriptions(tenant.lower()).get(sku_id.lower())
        if subscription is None:
            return JSONResponse({"detail": "no such SKU"}, status_code=404)
        subscription.enabled = enabled
    return JSONResponse({"tenant": tenant, "sku_id": sku_id, "enabled": enabled})
