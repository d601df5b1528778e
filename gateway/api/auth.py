"""Who is asking: Sign-In with Ethereum (EIP-4361) for a short-lived bearer token, and
the caller's roles read from ``CommunityRegistry``.

A client asks for a nonce, signs an EIP-4361 message with its own key (in its wallet; the
server never holds a member's key) and exchanges message and signature for a token
(HS256 JWT, ``token_ttl_s``, default 15 minutes). A nonce is good for one sign-in within
``nonce_ttl_s``; the message must name this server's host as its domain and the chain's
id. Roles are the registry's, looked up per request (cached for a few seconds), so a role
revoked on chain is gone from the API within that time.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from eth_utils import is_address, to_checksum_address
from fastapi import Header

from contracts.registry import Registry, Role
from gateway.api.problems import Problem

TOKEN_AUDIENCE = "lec-api"
MAX_OPEN_NONCES = 10_000
MAX_MESSAGE_AGE_S = 600


def unauthorized(detail: str) -> Problem:
    problem = Problem(401, "Unauthorized", detail)
    problem.headers["WWW-Authenticate"] = 'Bearer realm="lec-api"'
    return problem


@dataclass(frozen=True)
class Session:
    """A signed-in caller: an address and when its token ends."""

    address: str
    expires: int


class SessionAuthority:
    """Issues nonces, verifies SIWE sign-ins, issues and checks the tokens."""

    def __init__(
        self, secret: bytes, chain_id: int, token_ttl_s: int = 900, nonce_ttl_s: int = 300, clock=time.time
    ):
        self._secret = secret
        self.chain_id = chain_id
        self.token_ttl_s = token_ttl_s
        self.nonce_ttl_s = nonce_ttl_s
        self._clock = clock
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue_nonce(self) -> str:
        now = self._clock()
        nonce = secrets.token_hex(12)
        with self._lock:
            for old in [n for n, expiry in self._nonces.items() if expiry < now]:
                del self._nonces[old]
            if len(self._nonces) >= MAX_OPEN_NONCES:
                raise Problem(503, "Too many sign-ins", "too many sign-ins are open; try again in a minute")
            self._nonces[nonce] = now + self.nonce_ttl_s
        return nonce

    def sign_in(self, message: str, signature: str, host: str) -> tuple[str, Session]:
        """A token for the signer of ``message``, or a 401/422 problem saying what was wrong."""
        from siwe import SiweMessage  # siwe compiles its grammar on import: only when needed

        try:
            parsed = SiweMessage.from_message(message)
        except Exception as error:
            raise Problem(422, "Invalid request", f"message: not an EIP-4361 message ({error})") from None
        if parsed.domain != host:
            raise unauthorized(f"message: domain {parsed.domain!r} is not this server ({host!r})")
        if int(parsed.chain_id) != self.chain_id:
            raise unauthorized(f"message: chain id {parsed.chain_id} is not this chain's ({self.chain_id})")
        now = self._clock()
        try:
            issued = datetime.fromisoformat(str(parsed.issued_at).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise Problem(422, "Invalid request", "message: issued-at is not an ISO 8601 time") from None
        if not now - MAX_MESSAGE_AGE_S <= issued <= now + 60:
            raise unauthorized("message: issued-at is not within the last ten minutes")
        with self._lock:
            expiry = self._nonces.pop(parsed.nonce, None)
        if expiry is None or expiry < now:
            raise unauthorized(
                "message: unknown, used or expired nonce; ask GET /v1/auth/nonce for a new one"
            )
        try:
            parsed.verify(signature, timestamp=datetime.fromtimestamp(now, UTC))
        except Exception as error:
            raise unauthorized(
                f"signature: does not verify for {parsed.address} ({type(error).__name__})"
            ) from None
        session = Session(to_checksum_address(parsed.address), int(now) + self.token_ttl_s)
        return self.token_for(session), session

    def token_for(self, session: Session, scope: str = "member") -> str:
        claims = {
            "sub": session.address,
            "aud": TOKEN_AUDIENCE,
            "iat": int(self._clock()),
            "exp": session.expires,
            "scope": scope,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def session_of(self, authorization: str | None, scope: str = "member") -> Session:
        """The session a ``Bearer`` header carries, or a 401 problem."""
        if not authorization:
            raise unauthorized(
                "sign in first: GET /v1/auth/nonce, then POST /v1/auth/siwe; send the token as Bearer"
            )
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token:
            raise unauthorized("Authorization: expected 'Bearer <token>'")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=TOKEN_AUDIENCE,
                options={"require": ["exp", "sub", "aud"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired: sign in again") from None
        except jwt.PyJWTError as error:
            raise unauthorized(f"token invalid: {error}") from None
        if claims.get("scope") != scope or not is_address(claims["sub"]):
            raise unauthorized(f"token is not a {scope} token")
        return Session(to_checksum_address(claims["sub"]), int(claims["exp"]))


class RoleLookup:
    """Roles of an account as ``CommunityRegistry`` says, cached for ``ttl_s``."""

    def __init__(self, registry: Registry, ttl_s: float = 5.0, clock=time.monotonic):
        self.registry = registry
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[Role]]] = {}
        self._lock = threading.Lock()

    def roles_of(self, address: str) -> frozenset[Role]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(address)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        roles = frozenset(self.registry.roles_of(address))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[address] = (now, roles)
        return roles

    def require(self, address: str, role: Role) -> None:
        if role not in self.roles_of(address):
            raise Problem(
                403,
                "Forbidden",
                f"{address} does not hold {role.name} in the community's registry",
                needed_role=role.name,
            )


def role_holder(sessions: SessionAuthority, roles: RoleLookup, role: Role):
    """A route dependency: the signed-in address, when it holds ``role`` (else 401/403)."""

    def signed_in_with_role(
        authorization: str | None = Header(default=None, description="Bearer <token from /v1/auth/siwe>"),
    ) -> str:
        session = sessions.session_of(authorization)
        roles.require(session.address, role)
        return session.address

    return signed_in_with_role
