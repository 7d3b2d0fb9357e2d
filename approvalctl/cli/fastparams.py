"""Start-up speed: coerce plain `str`, `int`, `bool` and `list[str]` options without pydantic.

Typer (>= 0.2x) turns every command-line value into its annotated type with a pydantic
`TypeAdapter`. Importing pydantic and building those adapters costs about 90 ms on every
invocation — more than everything else `approvalctl approve ID` does (the start-up target is
0.25 s, interpreter included). Our options are all plain types, for which the conversion is
trivial, so `install()` wraps Typer's `build_runtime_param`: a value that is already in its
final form (any string for `str`, a canonical decimal like `50` or `-3` for `int`, strings
for `list[str]`) is converted here; anything else — a bad `--limit abc`, a constrained or
custom-parsed option, an unknown annotation — goes to Typer's own pydantic path, unchanged,
so results and error messages stay exactly Typer's.

If a future Typer moves these internals, `install()` does nothing and only speed is lost;
tests/test_startup.py notices.
"""

from __future__ import annotations

import re
from typing import Any

_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_installed = False


def install() -> bool:
    """Patch Typer's runtime coercion once; returns whether the fast path is active."""
    global _installed
    if _installed:
        return True
    try:
        from typer import _coercion, core
        from typer._typing import get_args, get_origin
    except ImportError:  # pragma: no cover - a Typer without these internals
        return False
    original = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if original is None or base is None:  # pragma: no cover
        return False

    def kind_of(descriptor: Any) -> str | None:
        info = descriptor.parameter_info
        if descriptor.file_annotation is not None or getattr(info, "parser", None) is not None:
            return None
        ann = descriptor.annotation
        if ann is str:
            return "str"
        if ann is int and info.min is None and info.max is None and not info.clamp:
            return "int"
        if ann is bool:
            return "bool"
        if get_origin(ann) is list and get_args(ann) == (str,):
            return "list[str]"
        return None

    class PlainRuntimeParam(base):  # type: ignore[misc, valid-type]
        """Typer's RuntimeParam for plain values; delegates anything unusual to Typer."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind = self.__dict__["_kind"]
            if kind == "str" and isinstance(value, str):
                return value
            if kind == "int":
                if type(value) is int:
                    return value
                if isinstance(value, str) and _CANONICAL_INT.fullmatch(value):
                    return int(value)
            if kind == "bool" and type(value) is bool:
                return value
            if kind == "list[str]" and isinstance(value, (list, tuple)) and \
                    all(isinstance(v, str) for v in value):
                return list(value)
            slow = self.__dict__.get("_slow")
            if slow is None:
                slow = original(self.__dict__["_descriptor"])
                object.__setattr__(self, "_slow", slow)
            return slow._coerce_value(value, param=param, ctx=ctx)

    def build_runtime_param(descriptor: Any) -> Any:
        kind = kind_of(descriptor)
        if kind is None:
            return original(descriptor)
        runtime = PlainRuntimeParam(parameter_info=descriptor.parameter_info,
                                    annotation=descriptor.annotation)
        object.__setattr__(runtime, "_kind", kind)
        object.__setattr__(runtime, "_descriptor", descriptor)
        return runtime

    core.build_runtime_param = build_runtime_param
    _installed = True
    return True
