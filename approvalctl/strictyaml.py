"""Strict YAML input: the config file and `rules import` files are read with this.

YAML 1.2 says mapping keys MUST be unique, but PyYAML keeps the last of a repeated key, so a
policy file reviewed in git could read `action: deny` while `action: allow` further down is
what gets imported. `load` refuses a repeated key anywhere in the document, naming it and
its line. Safe loading only (no Python objects), as `yaml.safe_load`.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import DuplicateKey


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping naming the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it below
                break
            if repeated:
                raise DuplicateKey(str(key), f"a YAML mapping (line "
                                             f"{key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _StrictLoader.construct_mapping)


def load(text: str) -> Any:
    """The one YAML document in `text`; raises yaml.YAMLError for bad YAML and
    DuplicateKey (a ValueError) for a repeated mapping key."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
