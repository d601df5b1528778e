"""OpenADR 3.0.1 VTN subset: devices read their capacity bands as events.

Real DER devices and charge-point operators take capacity limits over OpenADR 3 (the Dutch
grid-aware-charging profile uses it). This module serves, under ``BASE_PATH``
(``/openadr3/3.0.1``, the base URL an OpenADR 3 client is given), the read side of a VTN:

- ``POST /auth/token``: OAuth2 client credentials (RFC 6749 §4.4; form-encoded
  ``grant_type=client_credentials`` with ``client_id``/``client_secret`` in the body or as
  HTTP Basic), answering an HS256 JWT signed with the API's secret; errors are RFC 6749's
  ``{"error": ...}``. ``GET /auth/server`` names the token URL (OpenADR 3.1 discovery, which
  OpenADR 3 clients use). A VEN client exists per flexibility (client id = flexibility id,
  secret = ``client_secret(secret, id)``, an HMAC, so nothing is stored) and one business-logic
  client, ``dso``, reads everything. The tokens have their own audience and scope: they are
  no member tokens of ``/v1`` and member tokens are none of theirs.
- ``GET /programs``, ``/programs/{id}``: one program per community.
- ``GET /events``, ``/events/{id}``: per flexibility one event ``band-<flex id>`` whose
  intervals cover the coming ``HORIZON_MINUTES`` from the current minute on, minute by minute,
  runs of equal limits merged into one interval. Load convention (P > 0 consumption) and the
  band ``[P_min, P_max]`` in force become ``IMPORT_CAPACITY_LIMIT = max(P_max, 0)`` and
  ``EXPORT_CAPACITY_LIMIT = max(-P_min, 0)`` in kW; a flexibility gets the import limit if it
  can consume and the export limit if it can inject (by its hardware bounds). A floor
  (P_min > 0 or P_max < 0) has no capacity-limit form and is not sent. A VEN sees only its
  own flexibility's event.
- ``GET /vens``, ``/vens/{id}``: a VEN per flexibility (id and name = flexibility id).
- Reports, subscriptions and resources answer 501. Errors are problem details (RFC 7807, the
  OpenADR ``problem`` schema): 401 without or with a bad token, 403 for another VEN's
  objects, 404 for unknown ids, 400/422 for bad query values.

**The band in force, cheaply.** ``CapacityLimits.bandAt`` is the OCM band of the minute
(the flexibility's hardware bounds when none was published) intersected with the DSO's
limitation of that minute (the limitation alone when the two do not overlap). Both layers
arrive as events the API's ``ChainIndex`` already follows: ``BandPublished`` (``views.bands``,
the last publication per minute) and ``FlexibilityLimited`` (``views.limitations``, every DSO
limitation from block 0, chain order; a later one overwrites the earlier one's minutes, as on
chain, and carries the powers the contract stored: clamped to the hardware bounds, a feeder
limitation already split). So for a minute with an indexed OCM band the band in force is
computed here by the contract's rule without a chain call. A minute without an indexed OCM
band has none or one the index never saw (published before the index's first block); there
``bandAt`` is asked once and the answer kept until the index gets a band for that minute, a
new DSO limitation for that flexibility or a rebuild after a reorganisation, the only things
that can change it. In steady state that is one view call per flexibility and minute (the
minute entering the horizon beyond the oracle's), not one per minute and request.

Objects follow OpenADR 3.0.1's schema as far as the ``openadr3`` client's models (3.1) accept
it: camelCase fields, ``objectType`` on every payload descriptor, intervals each with their
own ``intervalPeriod`` and no event-level one, no ``targets`` (3.0.1 makes them valuesMaps,
3.1 strings; a VEN's token already says which flexibility it is) and no ``priority``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote_plus

import jwt
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2

from contracts import clock
from contracts.community import Community
from contracts.limits import CapacityLimits, LimitedFlexibility
from contracts.registry import Flexibility, Registry
from gateway.api.chain_index import ChainIndex, Views
from gateway.api.context import ApiContext
from gateway.api.problems import Problem

OPENADR_VERSION = "3.0.1"
BASE_PATH = f"/openadr3/{OPENADR_VERSION}"  # an OpenADR 3 client's base URL is http://host:port + this
TOKEN_PATH = "/auth/token"
BL_CLIENT_ID = "dso"  # the business-logic client (the DSO): reads every program, event and VEN
TOKEN_AUDIENCE = "lec-openadr"  # not the member tokens' "lec-api"
VEN_SCOPE = "openadr-ven"
BL_SCOPE = "openadr-bl"
GRANTED_SCOPE = "read_all"  # the OpenADR scope every token grants (this VTN is read-only)
TOKEN_TTL_S = 3600
HORIZON_MINUTES = 60
MAX_PAGE = 50  # OpenADR 3.0.1's largest ``limit``
IMPORT_LIMIT = "IMPORT_CAPACITY_LIMIT"
EXPORT_LIMIT = "EXPORT_CAPACITY_LIMIT"
UNITS = "KW"
EVENT_PREFIX = "band-"
PROGRAM_TYPE = "CAPACITY_BANDS"
VEN_TARGETS = ("VEN_NAME", "RESOURCE_NAME")  # target types naming a flexibility (its VEN and resource)
OBJECT_ID = r"^[a-zA-Z0-9_-]*$"  # OpenADR's objectID
_OBJECT_ID = re.compile(r"[a-zA-Z0-9_-]{1,128}")
FLEET_TTL_S = 10.0
MISSING_ID_REFRESH_S = 2.0
POWER_DIGITS = 3  # kW to the watt, as on chain

MAX_FORM_BYTES = 16_384

Band = tuple[float, float]  # (P_min, P_max) kW

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or a bad or expired one (problem details)"},
    403: {"description": "another VEN's object (problem details)"},
    404: {"description": "no such object (problem details)"},
    400: {"description": "a target filter this VTN does not know (problem details)"},
}
TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "RFC 6749 error: invalid_request, unsupported_grant_type"},
    401: {"description": "RFC 6749 error invalid_client: unknown client or wrong secret"},
}
TOKEN_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_id": {"type": "string", "description": "a flexibility id, or dso"},
                        "client_secret": {"type": "string", "description": "lec openadr credentials ID"},
                        "scope": {"type": "string", "description": "ignored: every token reads (read_all)"},
                    },
                }
            }
        },
    }
}


def client_secret(secret: bytes, client_id: str) -> str:
    """The OAuth2 client secret of ``client_id`` (a flexibility id or ``dso``): HMAC-SHA256 of
    the API's secret, in hex; anyone with ``DATA_DIR/api-secret`` can compute it again."""
    return hmac.new(secret, f"openadr:{client_id}".encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------- clients and tokens


@dataclass(frozen=True)
class VtnClient:
    """Who holds a VTN token: a flexibility's VEN or the business-logic client."""

    client_id: str
    business_logic: bool = False

    def may_read(self, flex_id: str) -> bool:
        return self.business_logic or self.client_id == flex_id


def _unauthorized(detail: str, token_given: bool) -> Problem:
    problem = Problem(401, "Unauthorized", detail)
    challenge = 'Bearer realm="openadr"'
    problem.headers["WWW-Authenticate"] = challenge + (', error="invalid_token"' if token_given else "")
    return problem


class VtnAuthority:
    """Checks client credentials, issues VTN tokens and reads them back."""

    def __init__(self, secret: bytes, ttl_s: int = TOKEN_TTL_S, clock=time.time):
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock

    def authenticate(self, client_id: str, secret: str) -> bool:
        expected = client_secret(self._secret, client_id).encode()
        return hmac.compare_digest(expected, secret.encode("utf-8", "surrogateescape"))

    def token_for(self, client: VtnClient) -> str:
        now = int(self._clock())
        claims = {
            "sub": client.client_id,
            "aud": TOKEN_AUDIENCE,
            "iat": now,
            "exp": now + self.ttl_s,
            "scope": BL_SCOPE if client.business_logic else VEN_SCOPE,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def client_of(self, authorization: str | None) -> VtnClient:
        """The client a ``Bearer`` header carries, or a 401 problem."""
        if not authorization:
            raise _unauthorized(
                f"no token: POST {BASE_PATH}{TOKEN_PATH} with your client credentials, send it as Bearer",
                False,
            )
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization: expected 'Bearer <token>'", True)
        try:
            claims = jwt.decode(
                token.strip(),
                self._secret,
                algorithms=["HS256"],
                audience=TOKEN_AUDIENCE,
                options={"require": ["exp", "sub", "aud"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized(f"token expired: fetch a new one at {BASE_PATH}{TOKEN_PATH}", True) from None
        except jwt.PyJWTError as error:
            raise _unauthorized(f"token invalid: {error}", True) from None
        scope, subject = claims.get("scope"), claims["sub"]
        if scope == BL_SCOPE and subject == BL_CLIENT_ID:
            return VtnClient(subject, business_logic=True)
        if scope == VEN_SCOPE and isinstance(subject, str) and subject != BL_CLIENT_ID:
            return VtnClient(subject)
        raise _unauthorized("token is not an OpenADR VTN token", True)


# ---------------------------------------------------------------------------- the registry


class Fleet:
    """The registry's flexibilities, cached for ``ttl_s`` (one view call per id and period)."""

    def __init__(self, registry: Registry, ttl_s: float = FLEET_TTL_S, clock=time.monotonic):
        self.registry = registry
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: tuple[float, list[str]] | None = None
        self._flexibilities: dict[str, tuple[float, Flexibility]] = {}

    def ids(self, max_age_s: float | None = None) -> list[str]:
        """Every registered flexibility id, in the registry's order."""
        now = self._clock()
        with self._lock:
            cached = self._ids
        if cached is not None and now - cached[0] < (self.ttl_s if max_age_s is None else max_age_s):
            return cached[1]
        ids = self.registry.flexibility_ids()
        with self._lock:
            self._ids = (now, ids)
        return ids

    def get(self, flex_id: str) -> Flexibility | None:
        """The flexibility ``flex_id`` (None: not registered)."""
        if flex_id not in self.ids() and flex_id not in self.ids(MISSING_ID_REFRESH_S):
            return None
        now = self._clock()
        with self._lock:
            cached = self._flexibilities.get(flex_id)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        flex = self.registry.flexibility(flex_id)
        with self._lock:
            self._flexibilities[flex_id] = (now, flex)
        return flex

    def servable(self, flex_id: str) -> Flexibility | None:
        """The flexibility if it is active and its id can be an OpenADR object id, else None."""
        if not _OBJECT_ID.fullmatch(flex_id):
            return None
        flex = self.get(flex_id)
        return flex if flex is not None and flex.active else None

    def all_servable(self) -> list[Flexibility]:
        return [flex for flex in map(self.servable, self.ids()) if flex is not None]


# -------------------------------------------------------------------------- bands in force


def combine(ocm: Band, dso: Band | None) -> Band:
    """The band in force from the OCM band (or hardware bounds) and the DSO limitation of a
    minute, by ``CapacityLimits._bandInForce``'s rule."""
    if dso is None:
        return ocm
    low, high = max(ocm[0], dso[0]), min(ocm[1], dso[1])
    return (low, high) if low <= high else dso


def dso_layer(limitations: Iterable[LimitedFlexibility], first: int, end: int) -> dict[int, Band]:
    """Minute → the DSO limitation of one flexibility over minutes ``[first, end)``;
    ``limitations`` in chain order, so a later one overwrites an earlier one, as on chain."""
    layer: dict[int, Band] = {}
    for limitation in limitations:
        start = max(first, clock.minute_of(limitation.start))
        stop = min(end, clock.minute_of(limitation.end))
        for minute in range(start, stop):
            layer[minute] = (limitation.p_min_kw, limitation.p_max_kw)
    return layer


class BandResolver:
    """The band in force per flexibility and minute from the index (see the module's doc)."""

    MAX_CACHED = 200_000

    def __init__(self, limits: CapacityLimits, index: ChainIndex):
        self.limits = limits
        self.index = index
        self._lock = threading.Lock()
        self._views: Views | None = None
        self._asked: dict[tuple[str, int], tuple[int, Band]] = {}  # (flex, minute) → (version, band)
        self.chain_reads = 0  # bandAt calls made (for tests and metrics)

    def bands(self, flex_ids: Sequence[str], first: int, count: int) -> dict[str, list[Band]]:
        """Flexibility → the band in force in each minute of ``[first, first + count)``."""
        views = self.index.refresh()
        end = first + count
        wanted = set(flex_ids)
        limitations: dict[str, list[LimitedFlexibility]] = {flex_id: [] for flex_id in flex_ids}
        for limitation in list(views.limitations):
            if limitation.flex_id in wanted:
                limitations[limitation.flex_id].append(limitation)
        with self._lock:
            if views is not self._views:  # rebuilt after a reorganisation: forget every answer
                self._views = views
                self._asked.clear()
            elif len(self._asked) > self.MAX_CACHED:
                self._asked = {key: value for key, value in self._asked.items() if key[1] >= first}
        answer = {}
        for flex_id in flex_ids:
            mine = limitations[flex_id]
            dso = dso_layer(mine, first, end)
            ocm = views.bands.get(flex_id, {})
            series = []
            for minute in range(first, end):
                published = ocm.get(minute)
                if published is not None:
                    series.append(combine(published, dso.get(minute)))
                else:
                    series.append(self._asked_band(flex_id, minute, len(mine)))
            answer[flex_id] = series
        return answer

    def _asked_band(self, flex_id: str, minute: int, version: int) -> Band:
        key = (flex_id, minute)
        with self._lock:
            cached = self._asked.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        in_force = self.limits.band_at(flex_id, clock.minute_start(minute))
        band = (in_force.p_min_kw, in_force.p_max_kw)
        with self._lock:
            self.chain_reads += 1
            self._asked[key] = (version, band)
        return band


# --------------------------------------------------------------------------- the objects


def _time(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return "PT" + (f"{hours}H" if hours else "") + (f"{rest}M" if rest or not hours else "")


def _kw(value: float) -> float:
    return round(value, POWER_DIGITS) + 0.0  # + 0.0: no -0.0 on the wire


def limit_types(flex: Flexibility) -> list[str]:
    """The payload types a flexibility gets: import if it can consume, export if it can inject."""
    types = [IMPORT_LIMIT] if flex.p_high_kw > 0 else []
    if flex.p_low_kw < 0:
        types.append(EXPORT_LIMIT)
    return types or [IMPORT_LIMIT]


def capacity_intervals(series: Sequence[Band], first: int, types: Sequence[str]) -> list[dict[str, Any]]:
    """OpenADR intervals from per-minute bands starting at minute ``first``: one per run of
    minutes with equal limits, each with its own ``intervalPeriod``."""
    runs: list[tuple[int, int, dict[str, float]]] = []  # (first minute, minutes, limits)
    for offset, (p_min, p_max) in enumerate(series):
        limits = {IMPORT_LIMIT: _kw(max(p_max, 0.0)), EXPORT_LIMIT: _kw(max(-p_min, 0.0))}
        chosen = {kind: limits[kind] for kind in types}
        if runs and runs[-1][2] == chosen:
            start, length, _ = runs[-1]
            runs[-1] = (start, length + 1, chosen)
        else:
            runs.append((first + offset, 1, chosen))
    return [
        {
            "id": number,
            "intervalPeriod": {"start": _time(clock.minute_start(start)), "duration": _duration(length)},
            "payloads": [{"type": kind, "values": [value]} for kind, value in limits.items()],
        }
        for number, (start, length, limits) in enumerate(runs)
    ]


def _descriptor(payload_type: str) -> dict[str, Any]:
    return {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": payload_type, "units": UNITS}


def event_id(flex_id: str) -> str:
    return EVENT_PREFIX + flex_id


class Catalogue:
    """The VTN's objects, built from the chain on request."""

    def __init__(self, community: Community, fleet: Fleet, resolver: BandResolver, horizon_minutes: int):
        self.community = community
        self.fleet = fleet
        self.resolver = resolver
        self.horizon_minutes = horizon_minutes
        name = community.deployment.config.name.strip() or "lec community"
        self.program_name = name[:128]
        self.program_id = re.sub(r"[^a-zA-Z0-9_-]+", "-", name).strip("-").lower()[:128] or "community"
        self._deployed_at: int | None = None

    def deployed_at(self) -> int:
        if self._deployed_at is None:
            block = self.community.client.w3.eth.get_block(self.community.deployment.block)
            self._deployed_at = int(block["timestamp"])
        return self._deployed_at

    def program(self) -> dict[str, Any]:
        created = _time(self.deployed_at())
        return {
            "id": self.program_id,
            "createdDateTime": created,
            "modificationDateTime": created,
            "objectType": "PROGRAM",
            "programName": self.program_name,
            "programLongName": f"Capacity bands of the energy community {self.program_name}"[:128],
            "programType": PROGRAM_TYPE,
            "intervalPeriod": {"start": created},
            "bindingEvents": False,  # the OCM oracle republishes the minutes ahead every minute
            "localPrice": False,
            "payloadDescriptors": [_descriptor(IMPORT_LIMIT), _descriptor(EXPORT_LIMIT)],
        }

    def events(self, flexibilities: Sequence[Flexibility], now: float | None = None) -> list[dict[str, Any]]:
        first = clock.minute_of(clock.now() if now is None else now)
        bands = self.resolver.bands([flex.flex_id for flex in flexibilities], first, self.horizon_minutes)
        stamp = _time(clock.minute_start(first))
        answer = []
        for flex in flexibilities:
            types = limit_types(flex)
            answer.append(
                {
                    "id": event_id(flex.flex_id),
                    "createdDateTime": stamp,
                    "modificationDateTime": stamp,
                    "objectType": "EVENT",
                    "programID": self.program_id,
                    "eventName": f"capacity band {flex.flex_id}",
                    "payloadDescriptors": [_descriptor(kind) for kind in types],
                    "intervals": capacity_intervals(bands[flex.flex_id], first, types),
                }
            )
        return answer

    @staticmethod
    def ven(flex: Flexibility) -> dict[str, Any]:
        return {
            "id": flex.flex_id,
            "objectType": "VEN",
            "venName": flex.flex_id,
            "attributes": [
                {"type": "DESCRIPTION", "values": [f"{flex.kind.name.lower()} on bus {flex.bus}"]},
                {"type": "MAX_POWER_CONSUMPTION", "values": [_kw(max(flex.p_high_kw, 0.0))]},
                {"type": "MAX_POWER_EXPORT", "values": [_kw(max(-flex.p_low_kw, 0.0))]},
            ],
        }


# -------------------------------------------------------------------------- the token route


def _oauth_error(status: int, error: str, description: str, basic: bool = False) -> JSONResponse:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="openadr"' if basic else 'Bearer realm="openadr"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    """(client id, secret) of an HTTP Basic header (RFC 6749 §2.3.1: each form-urlencoded)."""
    kind, _, encoded = authorization.partition(" ")
    if kind.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


async def _token(request: Request, authority: VtnAuthority, fleet: Fleet) -> JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _oauth_error(400, "invalid_request", f"the body is longer than {MAX_FORM_BYTES} bytes")
    if body and content_type != "application/x-www-form-urlencoded":
        return _oauth_error(
            400, "invalid_request", "send the parameters form-encoded (application/x-www-form-urlencoded)"
        )
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the body is not form-encoded UTF-8")
    repeated = sorted(name for name, values in fields.items() if len(values) > 1)
    if repeated:
        return _oauth_error(400, "invalid_request", f"parameter repeated: {', '.join(repeated)}")
    form = {name: values[0] for name, values in fields.items()}
    grant = form.get("grant_type")
    if not grant:
        return _oauth_error(400, "invalid_request", "grant_type missing: send grant_type=client_credentials")
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "this VTN grants client_credentials only")
    authorization = request.headers.get("authorization")
    basic = authorization is not None
    if basic:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return _oauth_error(
                401, "invalid_client", "Authorization: expected HTTP Basic client credentials", True
            )
        if "client_secret" in form or form.get("client_id", credentials[0]) != credentials[0]:
            return _oauth_error(
                400, "invalid_request", "send the client credentials either as HTTP Basic or in the body"
            )
    else:
        if not form.get("client_id") or not form.get("client_secret"):
            return _oauth_error(400, "invalid_request", "client_id and client_secret are required")
        credentials = (form["client_id"], form["client_secret"])
    client_id, secret = credentials
    refused = _oauth_error(401, "invalid_client", "unknown client or wrong secret", basic)
    if not authority.authenticate(client_id, secret):
        return refused
    if client_id == BL_CLIENT_ID:
        client = VtnClient(client_id, business_logic=True)
    elif fleet.servable(client_id) is not None:
        client = VtnClient(client_id)
    else:
        return _oauth_error(
            401, "invalid_client", f"{client_id} is no active flexibility of the community", basic
        )
    return JSONResponse(
        {
            "access_token": authority.token_for(client),
            "token_type": "Bearer",
            "expires_in": authority.ttl_s,
            "scope": GRANTED_SCOPE,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


# ------------------------------------------------------------------------------ the routes


def _page(items: list, skip: int, limit: int) -> list:
    return items[skip : skip + limit]


def _targets(
    target_type: str | None, target_values: list[str] | None, supported: Sequence[str]
) -> set[str] | None:
    """The values a target filter names (None: no filter), or a 400 problem."""
    if target_type is None and not target_values:
        return None
    if target_type is None or not target_values:
        raise Problem(400, "Bad request", "targetType and targetValues go together")
    if target_type not in supported:
        raise Problem(
            400,
            "Bad request",
            f"targetType {target_type!r} is not supported here; use one of {', '.join(supported)}",
        )
    return set(target_values)


_BEARER = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl=BASE_PATH + TOKEN_PATH, scopes={GRANTED_SCOPE: "read programs, events and VENs"}
        )
    ),
    scheme_name="OpenADRClientCredentials",
    auto_error=False,
)


def _caller(request: Request, authorization: Annotated[str | None, Depends(_BEARER)]) -> VtnClient:
    authority: VtnAuthority = request.app.state.openadr_authority
    return authority.client_of(authorization)


Caller = Annotated[VtnClient, Depends(_caller)]


def install(app: FastAPI, context: ApiContext) -> None:
    """Add the VTN's routes under ``BASE_PATH`` to ``app``."""
    authority = VtnAuthority(context.secret)
    fleet = Fleet(context.community.registry)
    resolver = BandResolver(context.community.limits, context.index)
    catalogue = Catalogue(context.community, fleet, resolver, HORIZON_MINUTES)
    app.state.openadr = catalogue
    app.state.openadr_authority = authority

    vtn = APIRouter(prefix=BASE_PATH, tags=["OpenADR 3 VTN"], responses=PROBLEM_RESPONSES)
    skip_query = Query(0, ge=0, description="number of records to skip")
    limit_query = Query(MAX_PAGE, ge=0, le=MAX_PAGE, description="most records to answer")
    type_query = Query(None, alias="targetType", description="VEN_NAME or RESOURCE_NAME (a flexibility id)")
    values_query = Query(None, alias="targetValues", description="target values (repeat the parameter)")

    auth = APIRouter(prefix=BASE_PATH, tags=["OpenADR 3 VTN"])

    @auth.get("/auth/server", summary="Where to fetch a token (OpenADR 3.1 discovery)")
    def auth_server(request: Request) -> dict:
        return {"tokenURL": str(request.url_for("openadr_token"))}

    @auth.post(
        TOKEN_PATH,
        name="openadr_token",
        summary="A token for client credentials (OAuth2, RFC 6749 §4.4)",
        openapi_extra=TOKEN_OPENAPI,
        responses=TOKEN_RESPONSES,
    )
    async def token(request: Request) -> JSONResponse:
        return await _token(request, authority, fleet)

    @vtn.get("/programs", summary="The community's program")
    def programs(
        client: Caller,
        target_type: str | None = type_query,
        target_values: list[str] | None = values_query,
        skip: int = skip_query,
        limit: int = limit_query,
    ) -> list[dict]:
        program = catalogue.program()
        supported = ("PROGRAM_NAME", *VEN_TARGETS)
        wanted = _targets(target_type, target_values, supported)
        if wanted is not None:
            if target_type == "PROGRAM_NAME":
                matches = program["programName"] in wanted
            else:  # the program applies to every flexibility
                matches = any(client.may_read(flex_id) and fleet.servable(flex_id) for flex_id in wanted)
            if not matches:
                return []
        return _page([program], skip, limit)

    @vtn.get("/programs/{programID}", summary="The community's program by id")
    def program_by_id(
        client: Caller,
        program_id: str = Path(alias="programID", pattern=OBJECT_ID, max_length=128),
    ) -> dict:
        if program_id != catalogue.program_id:
            raise Problem(
                404, "Not found", f"no program {program_id!r}; this VTN's is {catalogue.program_id!r}"
            )
        return catalogue.program()

    @vtn.get("/events", summary="Capacity-band events: a VEN's own, or every one for the business logic")
    def events(
        client: Caller,
        program_id: str | None = Query(None, alias="programID", pattern=OBJECT_ID, max_length=128),
        target_type: str | None = type_query,
        target_values: list[str] | None = values_query,
        skip: int = skip_query,
        limit: int = limit_query,
    ) -> list[dict]:
        wanted = _targets(target_type, target_values, VEN_TARGETS)
        if program_id is not None and program_id != catalogue.program_id:
            return []
        if client.business_logic:
            flexibilities = fleet.all_servable()
        else:
            own = fleet.servable(client.client_id)
            flexibilities = [own] if own is not None else []
        if wanted is not None:
            flexibilities = [flex for flex in flexibilities if flex.flex_id in wanted]
        return catalogue.events(_page(flexibilities, skip, limit))

    @vtn.get("/events/{eventID}", summary="One flexibility's capacity-band event")
    def event_by_id(
        client: Caller,
        event: str = Path(alias="eventID", pattern=OBJECT_ID, max_length=128),
    ) -> dict:
        flex = fleet.servable(event.removeprefix(EVENT_PREFIX)) if event.startswith(EVENT_PREFIX) else None
        if flex is None:
            raise Problem(404, "Not found", f"no event {event!r}")
        if not client.may_read(flex.flex_id):
            raise Problem(403, "Forbidden", f"event {event!r} belongs to another VEN")
        return catalogue.events([flex])[0]

    @vtn.get("/vens", summary="VENs: one per flexibility (a VEN sees its own)")
    def vens(
        client: Caller,
        ven_name: str | None = Query(None, alias="venName", max_length=128),
        target_type: str | None = type_query,
        target_values: list[str] | None = values_query,
        skip: int = skip_query,
        limit: int = limit_query,
    ) -> list[dict]:
        wanted = _targets(target_type, target_values, VEN_TARGETS)
        if client.business_logic:
            flexibilities = fleet.all_servable()
        else:
            own = fleet.servable(client.client_id)
            flexibilities = [own] if own is not None else []
        flexibilities = [
            flex
            for flex in flexibilities
            if (ven_name is None or flex.flex_id == ven_name) and (wanted is None or flex.flex_id in wanted)
        ]
        return [catalogue.ven(flex) for flex in _page(flexibilities, skip, limit)]

    @vtn.get("/vens/{venID}", summary="One VEN")
    def ven_by_id(
        client: Caller,
        ven: str = Path(alias="venID", pattern=OBJECT_ID, max_length=128),
    ) -> dict:
        flex = fleet.servable(ven)
        if flex is None:
            raise Problem(404, "Not found", f"no VEN {ven!r}")
        if not client.may_read(flex.flex_id):
            raise Problem(403, "Forbidden", f"VEN {ven!r} is another client's")
        return catalogue.ven(flex)

    methods = ["GET", "POST", "PUT", "DELETE"]
    for family in ("reports", "subscriptions", "resources"):
        for path in (f"/{family}", f"/{family}/{{objectID}}"):
            _not_implemented(vtn, path, family, methods)
    for path in ("/vens/{venID}/resources", "/vens/{venID}/resources/{resourceID}"):
        _not_implemented(vtn, path, "resources", methods)

    app.include_router(auth)
    app.include_router(vtn)


def _not_implemented(router: APIRouter, path: str, family: str, methods: list[str]) -> None:
    def refuse(client: Caller) -> None:
        raise Problem(
            501, "Not implemented", f"this VTN serves programs, events and VENs; {family} are not implemented"
        )

    router.add_api_route(
        path,
        refuse,
        methods=methods,
        summary=f"{family}: not implemented",
        include_in_schema=False,
        name=f"openadr_{family}_{path.count('/')}",
    )
