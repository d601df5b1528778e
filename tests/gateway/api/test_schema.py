"""Schemathesis against the live OpenAPI schema: generated requests (valid and not) to
every route, as nobody and as a signed-in member, find no server error and no response
that breaks the schema it documents."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from gateway.api.app import create_app
from tests.gateway.api.conftest import sign_in

EXAMPLES_PER_ROUTE = 10
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def schema(world):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(world.context))


def test_no_generated_request_breaks_the_api(schema, api, world):
    member = sign_in(api, world["alice"])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.label for op in operations]
    failures = []
    for operation in operations:
        for headers in ({}, member):
            try:
                exercise(operation, headers)()
            except Exception as error:  # collect every route's failure, then report them all
                failures.append(f"{operation.label} ({'member' if headers else 'anonymous'}): {error}")
    assert not failures, "\n\n".join(failures)


def exercise(operation, headers: dict):
    """A Hypothesis test of ``operation``: generated requests, sent with ``headers``."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_ROUTE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        case.call_and_validate(headers={**(case.headers or {}), **headers}, checks=CHECKS)

    return run
