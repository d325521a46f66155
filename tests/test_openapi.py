"""openapi.yaml is a valid OpenAPI document and describes exactly the routes the app serves."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from tests.service import ROOT

SPEC_PATH = ROOT / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def test_spec_is_valid_openapi():
    document, base_uri = read_from_filename(str(SPEC_PATH))
    validate(document, base_uri=base_uri)  # raises with the first problem found


def test_validator_rejects_a_broken_spec(spec):
    # The check above would be worthless if the validator accepted anything.
    broken = json.loads(json.dumps(spec))
    del broken["paths"]["/task"]["post"]["responses"]
    with pytest.raises(OpenAPIValidationError, match='"responses" is a required property'):
        validate(broken)


def _route_table(app) -> set[tuple[str, str]]:
    """(method, path) for every responder the app's router holds, in OpenAPI's path syntax."""
    routes = set()

    def walk(nodes):
        for node in nodes:
            if node.resource is not None:
                # "/status/{task_id:uuid}" is "/status/{task_id}" in OpenAPI.
                path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", node.uri_template)
                for method, responder in node.method_map.items():
                    # Falcon fills the other methods with its own 405 and OPTIONS responders;
                    # only methods of the resource object itself are the app's.
                    if getattr(responder, "__self__", None) is node.resource:
                        routes.add((method.lower(), path))
            walk(node.children)

    walk(app._router._roots)
    return routes


def _spec_operations(spec: dict) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_spec_and_route_table_match(client, spec):
    served = _route_table(client.app)
    described = _spec_operations(spec)
    assert ("post", "/task") in served and ("get", "/result/{task_id}") in served
    assert served - described == set(), "served but not in openapi.yaml"
    assert described - served == set(), "in openapi.yaml but not served"


def test_every_operation_documents_its_errors(spec):
    for method, path in _spec_operations(spec):
        operation = spec["paths"][path][method]
        assert operation.get("operationId"), (method, path)
        assert operation.get("description"), (method, path)
        protected = operation.get("security", spec["security"]) != []
        if protected:
            assert "401" in operation["responses"], (method, path)
        if "requestBody" in operation:
            for status in ("400", "413", "415"):
                assert status in operation["responses"], (method, path, status)


def test_served_spec_is_the_file(client, spec):
    as_yaml = client.simulate_get("/openapi.yaml")
    assert as_yaml.status_code == 200
    assert as_yaml.content == SPEC_PATH.read_bytes()
    as_json = client.simulate_get("/openapi.json")
    assert as_json.headers["Content-Type"].startswith("application/json")
    assert as_json.json == spec
