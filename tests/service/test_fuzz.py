"""Schemathesis over the app's own OpenAPI schema: generated bodies (valid and invalid) never get a 5xx, and every
answer matches the documented response schema. Bounded example counts keep it well under a minute."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from service.app import create_app
from service.settings import Settings

# /admin/reload is left out: a generated empty body reloads the whole artifact (seconds each); its error answers
# are covered in test_app and test_contracts
BODY_ROUTES = ["/recommend", "/recommend/batch", "/score", "/events", "/items"]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}
# (path, method, mode): invalid requests only where there is something to get wrong (a body)
OPERATIONS = [(p, "POST", mode) for p in BODY_ROUTES for mode in EXAMPLES]
OPERATIONS += [(p, "GET", GenerationMode.POSITIVE) for p in ("/healthz", "/readyz", "/metrics")]


@pytest.fixture(scope="module")
def client(artifact_root: Any, redis_url: str) -> Iterator[TestClient]:
    s = Settings(
        artifact=artifact_root, redis_url=redis_url, key_prefix="fuzz", cold_sync_seconds=0
    )
    with TestClient(create_app(s)) as c:
        yield c


@pytest.fixture(autouse=True)
def subnormal_floats() -> Iterator[None]:
    """Hypothesis generates subnormal floats and refuses to run while they are flushed to zero, which training in
    this process (the artifact fixture) turns on for the main thread; turned off here, and back on afterwards."""
    flushed = sys.float_info.min / 2 == 0.0
    if flushed:
        torch = pytest.importorskip("torch")
        torch.set_flush_denormal(False)
    yield
    if flushed:
        torch.set_flush_denormal(True)


def _send(client: TestClient, kwargs: dict[str, Any]) -> Any:
    kwargs = {k: v for k, v in kwargs.items() if k != "cookies" or v}  # none are generated here
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")
    return client.request(**kwargs)


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS, ids=str)
def test_generated_requests_get_no_5xx_and_documented_answers(
    client: TestClient, path: str, method: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    operation = schema[path][method]

    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = _send(client, case.as_transport_kwargs(base_url="http://testserver"))
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    check()
