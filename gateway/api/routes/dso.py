"""The DSO's view (DSO role): the OCM oracle's last cycle, bands of every flexibility,
violations, limitation records; and posting a limitation, signed by the DSO's own key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from contracts.limits import LimitationKind
from contracts.registry import Role
from gateway.api import transactions
from gateway.api.auth import role_holder
from gateway.api.context import ApiContext
from gateway.api.models import MAX_TIME, BandsAnswer, LimitationInfo, LimitationInput, Prepared, Violation
from gateway.api.problems import Problem
from gateway.api.routes.common import flexibility_bands, limited, violation, window

AUTH_RESPONSES = {401: {"description": "no or a bad token"}, 403: {"description": "not the DSO"}}


def router(context: ApiContext) -> APIRouter:
    community = context.community

    dso = role_holder(context.sessions, context.roles, Role.DSO)

    api = APIRouter(tags=["DSO"], responses=AUTH_RESPONSES)

    @api.get(
        "/dso/ocm",
        summary="The OCM oracle's last cycle: feasibility, binding constraints, voltages, loadings",
        responses={404: {"description": "no OCM cycle has run yet"}},
    )
    def ocm_status(address: str = Depends(dso)) -> dict[str, Any]:
        status = context.ocm_status()
        if status is None:
            raise Problem(
                404, "Not found", "no OCM cycle has reported yet (the oracle writes its status every minute)"
            )
        return status

    @api.get("/dso/bands", response_model=BandsAnswer, summary="Bands of every flexibility over a window")
    def all_bands(
        address: str = Depends(dso),
        from_time: int | None = Query(
            default=None, ge=0, le=MAX_TIME, description="Unix s; default 12 h ago"
        ),
        to_time: int | None = Query(default=None, ge=0, le=MAX_TIME, description="Unix s; default in 1 h"),
    ) -> BandsAnswer:
        start, end = window(from_time, to_time, before_s=12 * 3600)
        flex_ids = community.registry.flexibility_ids()
        return BandsAnswer(
            from_time=start, to_time=end, flexibilities=flexibility_bands(context, flex_ids, start, end)
        )

    @api.get("/dso/violations", response_model=list[Violation], summary="Band violations found by settlement")
    def violations(
        address: str = Depends(dso), limit: int = Query(default=200, ge=1, le=5000)
    ) -> list[Violation]:
        return [violation(record) for record in limited(context.index.refresh().violations, limit)]

    @api.get(
        "/dso/limitations", response_model=list[LimitationInfo], summary="DSO limitations per flexibility"
    )
    def limitations(
        address: str = Depends(dso), limit: int = Query(default=200, ge=1, le=5000)
    ) -> list[LimitationInfo]:
        return [
            LimitationInfo(**item.__dict__) for item in limited(context.index.refresh().limitations, limit)
        ]

    @api.post(
        "/dso/limitations/prepare",
        response_model=Prepared,
        summary="A limitation, as a transaction for the DSO",
    )
    def prepare_limitation(body: LimitationInput, address: str = Depends(dso)) -> Prepared:
        if body.flex_id not in community.registry.flexibility_ids():
            raise Problem(404, "Not found", f"flex_id: no flexibility {body.flex_id}")
        if body.p_min_kw > body.p_max_kw:
            raise Problem(422, "Invalid request", "p_max_kw: must be at least p_min_kw")
        kind = LimitationKind.FORESEEN if body.kind == "foreseen" else LimitationKind.UNFORESEEN
        call = community.limits.post_flexibility_limitation_call(
            body.flex_id, body.start, body.end, body.p_min_kw, body.p_max_kw, kind, body.reason
        )
        summary = (
            f"limit {body.flex_id} to {body.p_min_kw:g}..{body.p_max_kw:g} kW from {body.start} to {body.end}"
        )
        return transactions.prepared(community.client, [call], address, summary)

    return api
