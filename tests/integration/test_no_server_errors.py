"""No input gives a 5xx (issue 21), over real HTTP: hypothesis over the upload form fields and
`spec_text`, and schemathesis over every operation of the OpenAPI document.

Both run a bounded number of examples (CI has two cores): they are a net for what the targeted
tests in test_upload_limits_http.py and test_api_robustness.py do not name. A 5xx fails with the
request that caused it. Uploads here are refused before any checker starts (bad fields, bad
numbers, wrong suffixes), so no example waits for torch to import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.api_server import ApiServer, key_of, running_api

pytestmark = pytest.mark.integration

EXAMPLES = 60
FIELD_NAMES = ["num_classes", "num_outputs", "model", "architecture", "params", "input_shape", "file", "x",
               "num_classes\u00b2", ""]


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(redis_url, tmp_path_factory.mktemp("no-5xx")) as server:
        yield server


@pytest.fixture(scope="module")
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key_of('alice')}"},
                      timeout=60) as client:
        yield client


text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
fields = st.dictionaries(st.sampled_from(FIELD_NAMES), text, max_size=4)


def _ok(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text[:500])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields=fields, filename=st.sampled_from(["m.onnx", "d.npz", "m.pt", "x", "a.pt2"]),
       endpoint=st.sampled_from(["/v1/models", "/v1/datasets"]))
def test_upload_form_fields_never_give_a_5xx(http: httpx.Client, fields: dict[str, str], filename: str,
                                             endpoint: str) -> None:
    fields = {k: v for k, v in fields.items() if k != "file"}  # '²' and friends in number fields: 422
    files = {"file": (filename, b"not a model at all")}
    try:
        response = http.post(endpoint, files=files,
                             data={k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()})
    except UnicodeEncodeError:
        return  # httpx cannot put such a field name on the wire: nothing reached the server
    _ok(response)
    assert response.status_code in (400, 413, 415, 422, 429), response.text[:300]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec_text=st.one_of(text, st.text(max_size=200), st.sampled_from(
    ["name: a\u0000", "name: a\u0086", "\ud800", "{[", "a: &x [*x]", "\ufeffname: x", "name: \U0001f600"])))
def test_spec_text_never_gives_a_5xx(http: httpx.Client, spec_text: str) -> None:
    body = json.dumps({"spec_text": spec_text})  # ensure_ascii: lone surrogates travel as \\ud800 escapes
    response = http.post("/v1/specs/validate", content=body.encode(), headers={"content-type": "application/json"})
    _ok(response)
    assert response.status_code in (200, 413, 422, 429), response.text[:300]


def test_schemathesis_finds_no_server_error(api: ApiServer) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase
    from hypothesis import settings as hypothesis_settings

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    headers = {"Authorization": f"Bearer {key_of('alice')}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hypothesis_settings(max_examples=8, deadline=None, phases=[Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=api.url, headers=headers, timeout=60)
            readiness = case.formatted_path == "/readyz" and response.status_code == 503  # no worker: by design
            if response.status_code >= 500 and not readiness:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:200]}")

        run()
    assert operations >= 15
    assert not failures, "\n".join(failures[:10])
