"""No product code depends on a dependency's private internals (issue 17).

A leading underscore is a library's way of saying "may change in any release": code that
imports `typer._coercion`, or reaches `typer.core._x` through an attribute, breaks on an
upgrade without warning. This reads every module of the package with `ast` and fails on:

- `import X._y` and `from X._y import z` (a private module anywhere in the dotted path);
- `from X import _y` (a private name or module of a dependency);
- `X._y` where `X` is a name bound by importing a dependency.

Our own modules (relative imports, `approvalctl.*`) and dunders (`__version__`) are allowed,
and so are the few underscore names the standard library documents as public API
(`os._exit`, `sys._getframe`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import approvalctl

PACKAGE = Path(approvalctl.__file__).resolve().parent


#: Documented public functions whose names happen to start with an underscore.
DOCUMENTED = {"os._exit", "sys._getframe"}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def private_uses(source: str) -> list[str]:
    """`line: text` for every use of a dependency's private module or name in `source`."""
    tree = ast.parse(source)
    found: list[str] = []
    imported: set[str] = set()  # local names bound to a dependency's module or object
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "approvalctl":
                    continue
                if any(_private(p) for p in alias.name.split(".")):
                    found.append(f"{node.lineno}: import {alias.name}")
                imported.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").split(".")[0] in ("approvalctl", "__future__"):
                continue
            module = node.module or ""
            if any(_private(p) for p in module.split(".")):
                found.append(f"{node.lineno}: from {module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {module} import {alias.name}")
                imported.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported and \
                    ast.unparse(node) not in DOCUMENTED:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_uses_a_dependencys_private_internals() -> None:
    offences = [f"{path.relative_to(PACKAGE.parent)}:{use}"
                for path in sorted(PACKAGE.rglob("*.py"))
                for use in private_uses(path.read_text())]
    assert offences == []


def test_the_probe_catches_each_form() -> None:
    source = (
        "import typer._typing\n"
        "from typer._coercion import RuntimeParam\n"
        "from typer import _coercion, core\n"
        "import typer\n"
        "typer.core._flag = 1\n"
        "x = typer.__version__\n"
        "from . import _ours\n"
        "from approvalctl.store import _sql\n"
        "self._private = 1\n"
    )
    assert [use.split(":")[0] for use in private_uses(source)] == ["1", "2", "3", "5"]
