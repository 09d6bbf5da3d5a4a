"""POST /v1/specs/validate over real HTTP: problems with spec paths and the line of the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from service.schemas import EXAMPLE_SPEC
from tests.integration.api_server import ApiServer, running_api

pytestmark = pytest.mark.integration

GOOD = """\
name: tiny
dataset: {name: digits, train_size: 200, test_size: 100, seed: 0}
model: {architecture: mlp, params: {hidden: [16]}}
training: {epochs: 2, batch_size: 64}
regularizers:
  - {name: erm, kind: none}
  - name: doubleback
    kind: double_backprop
    weight: 1.0
seeds: [0]
evaluation:
  attacks:
    - {kind: fgsm, norm: linf, eps: [0.1]}
"""


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(redis_url, tmp_path_factory.mktemp("api-specs"), tenants=("alice",)) as server:
        yield server


def _validate(api: ApiServer, body: dict[str, Any]) -> dict[str, Any]:
    response = api.client("alice").post("/v1/specs/validate", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_valid_yaml_spec_comes_back_normalized(api: ApiServer) -> None:
    result = _validate(api, {"spec_text": GOOD})
    assert result["valid"] is True and result["problems"] == []
    spec = result["spec"]
    assert [r["kind"] for r in spec["regularizers"]] == ["none", "double_backprop"]
    assert spec["training"]["optimizer"]  # defaults filled in
    # The normalized spec is what POST /v1/jobs takes.
    accepted = api.client("alice").post("/v1/jobs", json={"kind": "compare", "spec": spec})
    assert accepted.status_code == 202, accepted.text


def test_json_text_and_a_parsed_spec_are_validated_too(api: ApiServer) -> None:
    as_text = _validate(api, {"spec_text": json.dumps(EXAMPLE_SPEC, indent="\t")})
    as_object = _validate(api, {"spec": EXAMPLE_SPEC})
    assert as_text["valid"] and as_object["valid"] and as_text["spec"] == as_object["spec"]
    bad = _validate(api, {"spec": {**EXAMPLE_SPEC, "seeds": []}})
    assert bad["valid"] is False and bad["spec"] is None
    assert [(p["path"], p["line"]) for p in bad["problems"]] == [("seeds", None)]  # no text, no line


def test_bad_yaml_syntax_gives_its_line(api: ApiServer) -> None:
    text = GOOD.replace("seeds: [0]", "seeds: [0")
    result = _validate(api, {"spec_text": text})
    assert result["valid"] is False
    [problem] = result["problems"]
    assert problem["path"] == "" and "not valid YAML" in problem["message"]
    assert problem["line"] == text.splitlines().index("seeds: [0") + 2  # where the parser noticed: next line


def test_a_misspelt_kind_names_its_path_line_and_the_right_word(api: ApiServer) -> None:
    result = _validate(api, {"spec_text": GOOD.replace("kind: double_backprop", "kind: double_backprp")})
    assert result["valid"] is False
    [problem] = result["problems"]
    assert problem["path"] == "regularizers[1].kind"
    assert "did you mean 'double_backprop'" in problem["message"]
    assert problem["line"] == GOOD.splitlines().index("    kind: double_backprop") + 1


def test_a_missing_field_points_at_its_parent(api: ApiServer) -> None:
    result = _validate(api, {"spec_text": GOOD.replace("    weight: 1.0\n", "    wieght: 1.0\n")})
    [problem] = result["problems"]
    assert problem["path"] == "regularizers[1].wieght" and "did you mean 'weight'" in problem["message"]
    assert problem["line"] == GOOD.splitlines().index("    weight: 1.0") + 1
    result = _validate(api, {"spec_text": GOOD.replace("model: {architecture: mlp, params: {hidden: [16]}}\n", "")})
    assert [p["path"] for p in result["problems"]] == ["model"]
    assert result["problems"][0]["line"] == 1  # the whole spec: its first line


def test_a_duplicate_key_is_a_problem_at_its_second_line(api: ApiServer) -> None:
    text = GOOD.replace("    weight: 1.0\n", "    weight: 1.0\n    weight: 5.0\n")
    result = _validate(api, {"spec_text": text})
    assert result["valid"] is False and result["spec"] is None
    [problem] = result["problems"]
    assert problem["path"] == "regularizers[1].weight" and "duplicate key 'weight'" in problem["message"]
    assert problem["line"] == text.splitlines().index("    weight: 5.0") + 1


@pytest.mark.parametrize(("body", "status", "kind"), [
    (b"not json", 400, "malformed_json"),
    (b'{"spec_text": "a: 1", "spec": {}}', 422, "invalid_request"),
    (b"{}", 422, "invalid_request"),
    (b'{"text": "a: 1"}', 422, "invalid_request"),
    (b'{"spec_text": 3}', 422, "invalid_request"),
])
def test_a_malformed_request_is_an_error(api: ApiServer, body: bytes, status: int, kind: str) -> None:
    response = api.client("alice").post("/v1/specs/validate", content=body,
                                        headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == kind


def test_it_needs_a_key_and_caps_the_body(api: ApiServer) -> None:
    assert api.client(None).post("/v1/specs/validate", json={"spec_text": GOOD}).status_code == 401
    huge = api.client("alice").post("/v1/specs/validate", json={"spec_text": "#" * (300 * 1024)})
    assert huge.status_code == 413, huge.text


def test_the_dashboard_is_served_beside_the_api(api: ApiServer) -> None:
    client = api.client(None)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/dashboard/app.js">' in page.text
    for asset in ("app.js", "api.js", "style.css"):
        response = client.get(f"/dashboard/{asset}")
        assert response.status_code == 200 and response.headers["cache-control"] == "no-cache", asset
    assert client.get("/dashboard/missing.js").json()["error"]["type"] == "not_found"
    assert client.get("/v1/nothing-here").json()["error"]["type"] == "not_found"  # the API keeps its 404s
    assert client.get("/healthz").status_code == 200 and client.get("/docs").status_code == 200


def test_sizes_beyond_the_bundled_dataset_are_refused_before_a_job_runs(api: ApiServer) -> None:
    """digits has 1,797 images; with test_fraction 0.3 the split holds 1,257 train and 540 test."""
    for sizes, path, words in (("train_size: 50000, test_size: 100", "dataset.train_size", "at most 1,257"),
                               ("train_size: 200, test_size: 541", "dataset.test_size", "at most 540")):
        result = _validate(api, {"spec_text": GOOD.replace("train_size: 200, test_size: 100", sizes)})
        assert result["valid"] is False
        assert words in {p["path"]: p["message"] for p in result["problems"]}[path], result
    spec = _validate(api, {"spec_text": GOOD})["spec"]
    refused = api.client("alice").post("/v1/jobs", json={"kind": "compare", "spec": {
        **spec, "dataset": {**spec["dataset"], "train_size": 50000}}})
    assert refused.status_code == 422, refused.text
    assert "1,257 train samples of digits" in refused.text


def test_a_repeated_regularizer_name_is_listed_beside_other_problems(api: ApiServer) -> None:
    text = GOOD.replace("name: doubleback", "name: erm").replace("epochs: 2", "epochs: -2")
    paths = [p["path"] for p in _validate(api, {"spec_text": text})["problems"]]
    assert "training.epochs" in paths and "regularizers[1].name" in paths
