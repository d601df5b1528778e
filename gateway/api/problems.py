"""RFC 7807 problem details for every error the API answers.

Every error leaves as ``application/problem+json`` with ``type``, ``title``, ``status`` and
``detail``; validation errors add ``errors`` (one entry per bad field, its location and
what was wrong), contract refusals add ``error`` and ``args`` (the contract's custom error,
decoded). Nothing a client sends produces a 500: an unexpected failure is logged with its
traceback and answered as a 500 problem without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from web3.exceptions import MismatchedABI

from contracts.client import ChainError, ContractRevert
from contracts.units import UnitError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://lec-node.org/problems/"  # identifiers, not pages to fetch


class Problem(Exception):
    """An error the API answers as problem details."""

    def __init__(self, status: int, title: str, detail: str, kind: str | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.extra = extra
        self.headers: dict[str, str] = {}


def problem_response(
    status: int, title: str, detail: str, kind: str, instance: str, headers=None, **extra
) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(location: tuple) -> str:
    return ".".join(str(part) for part in location if part not in ("body",)) or "body"


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem details."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, error: Problem):
        return problem_response(
            error.status,
            error.title,
            error.detail,
            error.kind,
            request.url.path,
            error.headers,
            **error.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError):
        errors = [
            {
                "field": _field(tuple(item.get("loc", ()))),
                "in": str(item.get("loc", ("body",))[0]),
                "message": item.get("msg", "invalid"),
            }
            for item in error.errors()
        ]
        detail = "; ".join(f"{item['field']}: {item['message']}" for item in errors)
        return problem_response(
            422, "Invalid request", detail, "invalid-request", request.url.path, errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException):
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 403: "Forbidden"}
        title = titles.get(error.status_code, "HTTP error")
        detail = str(error.detail) if error.detail else title
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; the API's routes are in /openapi.json"
        return problem_response(
            error.status_code,
            title,
            detail,
            title.lower().replace(" ", "-"),
            request.url.path,
            getattr(error, "headers", None),
        )

    @app.exception_handler(ContractRevert)
    async def on_revert(request: Request, error: ContractRevert):
        return problem_response(
            409,
            "Refused by the contract",
            str(error),
            "contract-refusal",
            request.url.path,
            error=error.error,
            args={key: _plain(value) for key, value in error.args_by_name.items()},
        )

    @app.exception_handler(MismatchedABI)
    @app.exception_handler(UnitError)
    async def on_unrepresentable(request: Request, error: Exception):
        # a value the validation let through that the contract's types cannot hold
        log.warning("unrepresentable value for %s: %s", request.url.path, str(error).splitlines()[0:3])
        return problem_response(
            422,
            "Invalid request",
            "a value does not fit the contract's types (too large or too precise)",
            "invalid-request",
            request.url.path,
        )

    @app.exception_handler(ChainError)
    async def on_chain(request: Request, error: ChainError):
        log.warning("chain unavailable for %s: %s", request.url.path, error)
        return problem_response(503, "Chain unavailable", str(error), "chain-unavailable", request.url.path)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception):
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return problem_response(
            500,
            "Internal error",
            "the server failed to answer; the error is in its log",
            "internal-error",
            request.url.path,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int | str | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return str(value)
