"""Schemathesis against the served OpenAPI schema: every documented operation, with generated
valid and invalid inputs, every response checked against the schema (status codes, content
types, bodies, auth). Bounded and derandomized, so it is quick and repeatable.

Schemathesis's pytest integration (`from_fixture`) does not work with pytest 9, so this drives
its Python API directly: one Hypothesis run per operation and generation mode, over the
schema as a client fetches it from the running server.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from runner.http.server import HttpServer

TOKEN = "test-token-5f1c"
OPERATIONS = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /api/jobs",
    "POST /api/jobs",
    "DELETE /api/jobs/{job_id}",
    "GET /api/jobs/{job_id}",
    "GET /api/runs",
    "POST /api/jobs/{job_id}/run",
    "POST /api/jobs/{job_id}/pause",
    "POST /api/jobs/{job_id}/resume",
}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(live: HttpServer, token: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), results
    assert {op.label for op in operations} == OPERATIONS

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters()):
            continue  # nothing to get wrong
        if mode is GenerationMode.POSITIVE and operation.label == "POST /api/jobs":
            # Whether a job is accepted depends on the target allowlist and on the code that
            # can be imported, which no schema can say; test_runtime_jobs_api covers it.
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=10,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"})

        check()
