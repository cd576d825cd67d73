"""The error contract as the document states it and as the server answers."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="module")
def doc(api_server) -> dict:
    return httpx.get(f"{api_server.url}/openapi.json").json()


def test_every_422_is_documented_in_the_servers_shape(doc):
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ValidationErrorOut"]["required"] == ["detail", "errors"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and method != "head" and path != "/healthz":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("ValidationErrorOut" if code == "422" else "ErrorOut"), (path, method, code)
            if op.get("security"):
                assert {"401", "429", "503"} <= set(op["responses"]), (path, method)


def test_the_upload_and_the_logs_are_described(doc):
    upload = doc["paths"]["/v1/packages"]["post"]
    assert upload["requestBody"]["content"]["application/zip"]["schema"] == {"type": "string", "format": "binary"}
    logs = doc["paths"]["/v1/jobs/{job_id}/logs"]["get"]["responses"]
    assert "text/plain" in logs["200"]["content"] and "application/json" in logs["404"]["content"]


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_a_malformed_body_is_a_documented_422(api_server, body):
    with api_server.client() as c:
        r = c.post("/v1/partners", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"detail", "errors"} and r.json()["errors"]


def test_service_422_has_the_same_shape(api_server):
    with api_server.client() as c:
        r = c.post("/v1/users", json={"name": "shape-check", "roles": ["emperor"]})
    assert r.status_code == 422 and r.json()["errors"] == [{"loc": "", "msg": r.json()["detail"]}]


def test_log_errors_are_json(api_server):
    with api_server.client() as c:
        r = c.get("/v1/jobs/j-nope/logs")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
