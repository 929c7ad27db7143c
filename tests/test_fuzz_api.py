"""Schemathesis over the gateway's own OpenAPI schema, against the session's real gateway (with its
real worker): every operation, valid and invalid inputs, tenant key on /v1, admin key on /admin.
No answer may be a 5xx, and every error must be in OpenAI's shape. Examples per operation are
bounded so this runs in a few minutes on CI; PEFTSERVE_FUZZ_EXAMPLES raises it for a long run,
PEFTSERVE_FUZZ_REPORT=<file> writes the counts (docs/RELIABILITY.md quotes them)."""

import json
import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tests.gateway_harness import ADMIN_KEY

EXAMPLES = int(os.environ.get("PEFTSERVE_FUZZ_EXAMPLES", "12"))
FUZZ_TENANT = "fuzz"
# Completions for the served base with small work, so sampling fields reach the real worker.
SMALL_GENERATION = {"max_tokens": 2, "n": 1}

seen: Counter = Counter()
statuses: Counter = Counter()
failures: list[str] = []


@pytest.fixture(scope="module")
def api_schema(gateway):
    yield schemathesis.openapi.from_dict(gateway.app.openapi())
    report = os.environ.get("PEFTSERVE_FUZZ_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"operations": len({op for op, _ in seen}), "examples": sum(seen.values()),
                       "per_operation_and_mode": {f"{op} [{mode}]": n for (op, mode), n in sorted(seen.items())},
                       "statuses": dict(sorted(statuses.items())), "failures": failures}, f, indent=1)


def headers_for(gateway, path: str) -> dict:
    key = ADMIN_KEY if path.startswith("/admin") else gateway.tenant_key(FUZZ_TENANT)
    return {"Authorization": f"Bearer {key}"}


def check(case, gateway, mode: str) -> None:
    if case.path in ("/v1/completions", "/v1/chat/completions") and isinstance(case.body, dict) \
            and len(json.dumps(case.body, default=str)) % 2:
        case.body = {**case.body, "model": "tiny", **SMALL_GENERATION}  # about half of them reach the worker
    response = case.call(base_url=gateway.url, headers=headers_for(gateway, case.path), timeout=120)
    operation = f"{case.method} {case.path}"
    seen[(operation, mode)] += 1
    statuses[str(response.status_code)] += 1
    described = f"{operation} -> {response.status_code}: {response.text[:300]}\n{case.as_curl_command()}"
    problem = None
    if response.status_code >= 500:
        problem = "5xx"
    elif response.status_code >= 400:
        try:
            error = response.json().get("error")
        except ValueError:
            error = None
        if not (isinstance(error, dict) and {"message", "type", "code"} <= set(error) and error["message"]):
            problem = "not in OpenAI's error shape"
    if problem:
        failures.append(f"{problem}: {described}")
        raise AssertionError(f"{problem}: {described}")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_error_in_openai_shape(api_schema, gateway, mode):
    problems = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case):
            check(case, gateway, mode.value)

        try:
            fuzz()
        except AssertionError as e:  # keep going: one run lists every failing operation
            problems.append(str(e).splitlines()[0])
        except Exception as e:  # e.g. hypothesis could not generate for this mode: say which
            if "Unsatisfiable" not in type(e).__name__:
                problems.append(f"{operation.method.upper()} {operation.path}: {type(e).__name__}: {e}")
    assert not problems, "\n".join(problems)
