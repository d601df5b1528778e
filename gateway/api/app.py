"""The API application: routers, problem details, rate limits, metrics and the web pages."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from contracts import clock
from contracts.paths import NODE_MODULES
from gateway.api import problems
from gateway.api.context import ApiContext
from gateway.api.limits import BodyGuard, RateLimiter
from gateway.api.routes import auth, dso, member, operator, pricing, public

WEB = Path(__file__).parent / "web"
ETHERS_BUNDLE = NODE_MODULES / "ethers" / "dist" / "ethers.umd.min.js"
UNLIMITED = ("/health", "/metrics")

DESCRIPTION = """\
The community's dApp API. Public reads need nothing; a member's private reads need a
token from Sign-In with Ethereum (EIP-4361: `GET /v1/auth/nonce`, sign the message with
your own key, `POST /v1/auth/siwe`), sent as `Authorization: Bearer <token>`. Writes are
transactions signed by the member's own wallet: `.../prepare` routes answer the unsigned
transaction (nonce, fees, gas), `POST /v1/tx` relays the signed one. Roles are the
community registry's. Units: kW, kWh, tokens, UTC Unix seconds; market slots are Unix
time / slot length. Errors are RFC 7807 problem details.
"""


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="lec-node community API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.context = context
    problems.install(app)
    _install_limits_and_metrics(app, context)
    app.add_middleware(BodyGuard, refuse=_refusal)
    for module in (public, auth, member, dso, operator, pricing):
        app.include_router(module.router(context), prefix="/v1")
    app.include_router(member.relay_router(context), prefix="/v1")
    _install_openadr(app, context)
    _install_pages(app)

    @app.get("/health", tags=["operations"], summary="Liveness and the chain head the API reads")
    def health() -> dict:
        client = context.community.client
        head = client.head_block()
        age = clock.now() - client.latest_timestamp()
        return {"status": "ok", "chain_id": client.chain_id, "head": head, "head_age_s": round(age, 1)}

    return app


def _install_openadr(app: FastAPI, context: ApiContext) -> None:
    from gateway.api import openadr

    openadr.install(app, context)


def _install_limits_and_metrics(app: FastAPI, context: ApiContext) -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "lec_api_requests", "HTTP requests answered", ["method", "route", "status"], registry=registry
    )
    latency = Histogram("lec_api_request_seconds", "time to answer", ["route"], registry=registry)
    limited = Counter("lec_api_rate_limited", "requests refused by the rate limit", registry=registry)
    limiter = RateLimiter(context.settings.requests_per_second, context.settings.burst)

    @app.middleware("http")
    async def limit_and_measure(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if path not in UNLIMITED:
            client = request.client.host if request.client else "unknown"
            allowed, wait_s = limiter.allow(client)
            if not allowed:
                limited.inc()
                return problems.problem_response(
                    429,
                    "Too many requests",
                    f"more than {context.settings.requests_per_second:g} requests per second from {client}; "
                    f"retry after {wait_s:.1f} s",
                    "too-many-requests",
                    path,
                    {"Retry-After": str(max(1, round(wait_s)))},
                )
        response = await call_next(request)
        template = _route_template(request) if request.scope.get("route") is not None else "unmatched"
        requests.labels(request.method, template, str(response.status_code)).inc()
        latency.labels(template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _refusal(status: int, title: str, detail: str, scope) -> Response:
    kind = "request-too-large" if status == 413 else "invalid-request"
    return problems.problem_response(status, title, detail, kind, scope.get("path", ""))


def _route_template(request: Request) -> str:
    """The path with its parameters named (``/v1/tx/{tx_hash}``): a bounded metrics label."""
    values = {str(value): name for name, value in request.scope.get("path_params", {}).items()}
    return "/".join(f"{{{values[part]}}}" if part in values else part for part in request.url.path.split("/"))


def _install_pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/member")

    @app.get("/member", include_in_schema=False)
    def member_page() -> FileResponse:
        return FileResponse(WEB / "member.html")

    @app.get("/dso", include_in_schema=False)
    def dso_page() -> FileResponse:
        return FileResponse(WEB / "dso.html")

    @app.get("/vendor/ethers.umd.min.js", include_in_schema=False)
    def ethers_bundle() -> FileResponse:
        if not ETHERS_BUNDLE.exists():
            raise problems.Problem(
                404,
                "Not found",
                "ethers is not installed: run scripts/setup.sh (npm ci) to serve the web pages",
            )
        return FileResponse(ETHERS_BUNDLE, media_type="text/javascript")
