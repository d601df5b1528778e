"""Sign-In with Ethereum: a nonce, then the signed EIP-4361 message for a token."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.api.context import ApiContext
from gateway.api.models import Nonce, SignedIn, SignIn


def router(context: ApiContext) -> APIRouter:
    api = APIRouter(tags=["sign-in"])
    sessions = context.sessions

    @api.get("/auth/nonce", response_model=Nonce, summary="A nonce for one EIP-4361 sign-in")
    def nonce() -> Nonce:
        return Nonce(
            nonce=sessions.issue_nonce(), chain_id=sessions.chain_id, expires_in=sessions.nonce_ttl_s
        )

    @api.post(
        "/auth/siwe",
        response_model=SignedIn,
        summary="Exchange a signed EIP-4361 message for a bearer token",
        responses={401: {"description": "the message or signature does not hold"}},
    )
    def sign_in(body: SignIn, request: Request) -> SignedIn:
        host = request.headers.get("host", "")
        token, session = sessions.sign_in(body.message, body.signature, host)
        roles = sorted(role.name for role in context.roles.roles_of(session.address))
        return SignedIn(token=token, address=session.address, expires=session.expires, roles=roles)

    return api
