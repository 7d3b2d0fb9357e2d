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
                    # decision-link pages answer a browser: their refusals are HTML pages
                    expected = ["text/html"] if path.startswith("/d/") else \
                        ["application/problem+json"]
                    assert list(content) == expected, (method, path)
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



# ---------------------------------------------------------------- the compiled validators
_AWKWARD = [None, True, False, 0, 1, -1, 1.0, 0.5, -0.0, 10**20, float("inf"), "", " ", "\x00",
            "a\x00b", "\t\n", "x" * 199, "x" * 200, "x" * 201, "y" * 4001, "approve", "reject",
            "low", "high", "medium", "user", "admin", "ok-name", "ok-name\n", "-bad", "a b", [],
            ["x"], {}, {"a": 1}, {"nested": {"deep": [1, 2]}}, 315360000, 315360001, 1e-9]


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


def test_every_refusal_of_an_awkward_value_is_one_line_of_invalid_input():
    """For every operation and a few hundred awkward bodies and parameter values, the
    validators either accept or raise InvalidInput with one line — never another error."""
    from approvalctl.errors import InvalidInput

    refused = 0
    for op in spec.operations().values():
        for param in op.params.values():
            for value in _AWKWARD:
                try:
                    spec._check(param.validator, value, "query", "", param.name)
                except InvalidInput as exc:
                    refused += 1
                    assert "\n" not in exc.detail and exc.detail, exc.detail
        for body in _bodies(op) if op.body is not None else ():
            try:
                op.check_body(body)
            except InvalidInput as exc:
                refused += 1
                assert "\n" not in exc.detail and exc.detail, exc.detail
    assert refused > 100


def test_patterns_follow_json_schema_not_pythons_re():
    """JSON Schema patterns are ECMA-262: `$` ends the string. Python's `re` lets `$` match
    before a trailing newline, so jsonschema alone accepted "ci-bot\\n" as a key name; the
    compiled validator refuses it, with the one-line message of the spec's pattern."""
    import pytest

    from approvalctl.errors import InvalidInput

    keys = spec.operations()[("POST", "/api/v1/keys")]
    keys.check_body({"name": "ci-bot", "role": "user"})
    with pytest.raises(InvalidInput) as caught:
        keys.check_body({"name": "ci-bot\n", "role": "user"})
    assert caught.value.detail == ("request body: name 'ci-bot\\n' is not allowed: Letters, "
                                   "digits and `_ . @ -`, starting with a letter or digit")


def test_refusals_name_the_field_and_use_the_specs_own_messages():
    create = spec.operations()[("POST", "/api/v1/approvals")]
    create.check_body({"tool_name": "git_push", "arguments": {"b": 1}, "risk": "high",
                       "reason": None, "ttl_seconds": 60})
    import pytest

    from approvalctl.errors import InvalidInput

    for body, detail in [
        ({"tool_name": "t", "risk": "extreme"},
         "unknown risk 'extreme': expected one of low, medium, high"),
        ({"tool_name": "t", "bogus": 1}, "request body: unknown field 'bogus' (allowed: "),
        ({}, "request body: 'tool_name' is required"),
        ({"tool_name": 5}, "request body: tool_name must be a string, not a number"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            create.check_body(body)
        assert caught.value.detail.startswith(detail), caught.value.detail
