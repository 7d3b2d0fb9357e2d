"""Findings, the lint report, and the exclusions file that silences findings with a reason.

A finding prints as `path:rule:severity:location:message`. The exclusions file
(`.lint-dashboards-ignore`) takes the same shape, so a finding is silenced by copying its
first fields and saying why:

    # path-glob:rule[:location-glob]  -- reason (required)
    dashboards/legacy.json:metric-exported:panel 7*  -- kept for the old exporter until Q3
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path

ERROR, WARNING = "error", "warning"


@dataclass
class Finding:
    path: str
    rule: str
    severity: str
    location: str
    message: str

    def line(self) -> str:
        return f"{self.path}:{self.rule}:{self.severity}:{self.location}:{self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Exclusion:
    path: str
    rule: str
    location: str
    reason: str
    line: int

    def matches(self, f: Finding) -> bool:
        return (fnmatch.fnmatchcase(f.path, self.path) and (self.rule in ("*", f.rule))
                and fnmatch.fnmatchcase(f.location, self.location or "*"))


@dataclass
class Report:
    files: list[Path] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    excluded: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == WARNING for f in self.findings)


def parse_exclusions(text: str, source: str = ".lint-dashboards-ignore"
                     ) -> tuple[list[Exclusion], list[Finding]]:
    """The exclusions in `text`, and findings for entries that are malformed or unexplained."""
    out: list[Exclusion] = []
    problems: list[Finding] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        spec, sep, reason = line.partition("--")
        parts = spec.strip().split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            problems.append(Finding(source, "exclusion", ERROR, f"line {n}",
                                    "expected 'path:rule[:location]  -- reason'"))
            continue
        if not sep or not reason.strip():
            problems.append(Finding(source, "exclusion", ERROR, f"line {n}",
                                    f"exclusion of {parts[1]} on {parts[0]} gives no reason "
                                    "(add '-- why this is fine')"))
            continue
        out.append(Exclusion(parts[0], parts[1], parts[2] if len(parts) > 2 else "",
                             reason.strip(), n))
    return out, problems


def load_exclusions(path: Path) -> tuple[list[Exclusion], list[Finding]]:
    return parse_exclusions(path.read_text(encoding="utf-8"), str(path))
