"""specs/approval_api.yaml and the server cannot drift: same routes, same methods, and every
error documented as problem+json."""

from __future__ import annotations

import re

from approvalctl.config import Settings
from approvalctl.server import create_app, spec
from approvalctl.server.spec import HTTP_METHODS, load_spec, operations, spec_path


def test_spec_is_the_top_level_document_through_the_package_link():
    from pathlib import Path

    import approvalctl

    top = Path(approvalctl.__file__).resolve().parents[1] / "specs" / "approval_api.yaml"
    assert spec_path().resolve() == top.resolve()  # one hand-kept copy
    assert load_spec()["openapi"].startswith("3.0")


def test_the_document_is_valid_openapi():
    from openapi_spec_validator import validate

    validate(load_spec())


def test_the_yaml_uses_block_style_only():
    """No `{...}` or `[...]` collections with content: in flow style an unquoted comma
    silently adds a key (a junk key once broke the document), in block style it cannot.
    An empty `[]` (e.g. `security: []`) has no block spelling and nothing to split."""
    import yaml

    flow = []

    def walk(node: yaml.Node) -> None:
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if node.flow_style and node.value:
                flow.append(f"line {node.start_mark.line + 1}")
            children = node.value if isinstance(node, yaml.SequenceNode) else \
                [part for pair in node.value for part in pair]
            for child in children:
                walk(child)

    walk(yaml.compose(spec_path().read_text()))
    assert flow == []


def test_served_openapi_json_is_valid_openapi(http, live):
    from openapi_spec_validator import validate

    validate(http.get("/openapi.json").json())


def test_every_route_is_in_the_spec_and_every_spec_path_is_a_route(store):
    app = create_app(store, Settings(), background=False)
    app_paths = {r.path for r in app.routes}
    spec_paths = set(load_spec()["paths"])
    assert app_paths == spec_paths


def test_every_method_the_server_answers_is_in_the_spec_and_vice_versa(http, live):
    spec = load_spec()
    documented = {(m.upper(), p) for p, item in spec["paths"].items()
                  for m in HTTP_METHODS if m in item}
    # ask the live server: a method it does not implement is 405 with an Allow list
    served = set()
    for path in spec["paths"]:
        concrete = re.sub(r"\{[^}]+\}", "01m8bt6m8w02a0t5fyr96x74zx", path)
        r = http.request("OPTIONS", concrete, headers=live.headers("admin"))
        assert r.status_code == 405
        served |= {(m.strip(), path) for m in r.headers["allow"].split(",")}
    assert served == documented


def test_every_operation_documents_its_errors_as_problem_json():
    spec = load_spec()
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method not in item:
                continue
            op = item[method]
            assert op.get("operationId"), (method, path)
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    ref = resp["$ref"].split("/")[-1]
                    content = spec["components"]["responses"][ref]["content"]
                    assert list(content) == ["application/problem+json"], (method, path)
            secured = op.get("security", spec["security"]) != []
            if secured:
                assert "401" in op["responses"] and "403" in op["responses"], (method, path)
                assert "429" in op["responses"], (method, path)
            if "requestBody" in op:
                assert {"400", "413", "415"} <= set(op["responses"]), (method, path)


def test_compiled_operations_cover_the_whole_document():
    spec = load_spec()
    count = sum(1 for item in spec["paths"].values() for m in HTTP_METHODS if m in item)
    assert len(operations()) == count


def test_openapi_json_is_the_yaml_document(http, live):
    assert http.get("/openapi.json").json() == load_spec()


def test_request_schemas_reject_what_the_design_forbids():
    ops = operations()
    create = ops[("POST", "/api/v1/approvals")]
    good = {"tool_name": "git_push", "arguments": {"a": 1}, "reason": None, "risk": "low",
            "ttl_seconds": 60}
    assert create.check_body(good) == good
    for bad in ({}, {"tool_name": ""}, {"tool_name": "x", "user_id": "y"},
                {"tool_name": "x", "ttl_seconds": 0}, {"tool_name": "x", "risk": "none"}):
        try:
            create.check_body(bad)
        except Exception as exc:  # noqa: BLE001 - asserting the type below
            assert type(exc).__name__ == "InvalidInput"
        else:
            raise AssertionError(f"accepted {bad}")



# ---------------------------------------------------------------- the fast acceptance path
_AWKWARD = [None, True, False, 0, 1, -1, 1.0, 0.5, -0.0, 10**20, float("inf"), "", " ", "\x00",
            "a\x00b", "\t\n", "x" * 199, "x" * 200, "x" * 201, "y" * 4001, "approve", "reject",
            "low", "high", "medium", "user", "admin", "ok-name", "-bad", "a b", [], ["x"], {},
            {"a": 1}, {"nested": {"deep": [1, 2]}}, 315360000, 315360001, 1e-9]


def _bodies(op):
    """Bodies built from the operation's own property names and awkward values."""
    schema = op.body.schema
    names = list(schema.get("properties", {}))
    yield from _AWKWARD
    for name in names:
        for value in _AWKWARD:
            base = {n: "approve" if n == "action" else "user" if n == "role" else "x"
                    for n in schema.get("required", [])}
            yield {**base, name: value}
            yield {name: value}
    yield {**{n: "x" for n in names}, "unexpected": 1}


def test_fast_acceptance_never_admits_what_the_schema_refuses():
    """The server's shortcut for valid bodies and parameters is never looser than the
    document: for every operation and a few hundred awkward values, whatever the shortcut
    accepts, jsonschema accepts too (and it does accept the ordinary valid bodies)."""
    accepted = 0
    for op in spec.operations().values():
        checkers = [(p.validator, list(_AWKWARD)) for p in op.params.values()]
        if op.body is not None:
            checkers.append((op.body, list(_bodies(op))))
        for checker, values in checkers:
            assert checker.fast is not None, f"{op.method} {op.path}: no fast path"
            for value in values:
                if checker.fast(value):
                    accepted += 1
                    errors = list(checker.validator.iter_errors(value))
                    assert not errors, (op.method, op.path, value, errors[0].message)
    assert accepted > 50
    create = spec.operations()[("POST", "/api/v1/approvals")].body
    assert create.fast({"tool_name": "git_push", "arguments": {"b": 1}, "risk": "high",
                        "reason": None, "ttl_seconds": 60})
