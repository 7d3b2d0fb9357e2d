"""One error module and one exit-code table (issue 17)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import approvalctl
from approvalctl import errors
from approvalctl.models import ApprovalRequest

PACKAGE = Path(approvalctl.__file__).resolve().parent
#: Allowed outside errors.py: digest.py's DigestError (a ValueError of the digest helper,
#: kept beside the function that raises it).
ELSEWHERE = {("digest.py", "DigestError")}


def _exception_classes(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b).split(".")[-1] for b in node.bases]
            if any(b.endswith(("Error", "Exception", "Denied", "Failed", "Spoiled"))
                   or b in errors.__dict__ for b in bases):
                names.append(node.name)
    return names


def test_every_exception_class_is_defined_in_errors_py() -> None:
    stray = [(str(p.relative_to(PACKAGE)), name)
             for p in sorted(PACKAGE.rglob("*.py")) if p.name != "errors.py"
             for name in _exception_classes(ast.parse(p.read_text()))]
    assert [s for s in stray if s not in ELSEWHERE] == []


@pytest.mark.parametrize(("status", "code"), [("approved", 0), ("rejected", 10),
                                              ("expired", 11), ("cancelled", 12),
                                              ("pending", 124), ("bogus", 1)])
def test_one_table_maps_final_statuses_to_exit_codes(status, code) -> None:
    assert errors.exit_code(status) == code


@pytest.mark.parametrize(("status", "code"), [("rejected", 10), ("expired", 11),
                                              ("cancelled", 12), ("pending", 124)])
def test_require_approval_reports_the_same_codes(status, code) -> None:
    req = ApprovalRequest.__new__(ApprovalRequest)
    req.status = status
    assert errors.ApprovalDenied("no", req).exit_code == code == errors.exit_code(status)


def test_errors_carry_their_own_exit_code() -> None:
    assert errors.exit_code(errors.NotFound("x")) == 3
    assert errors.exit_code(errors.PayloadTooLarge("x")) == 2
    assert errors.exit_code(RuntimeError("x")) == 1
