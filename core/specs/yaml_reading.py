"""YAML reading that reports what PyYAML passes over in silence: duplicate keys.

PyYAML keeps the last of two equal keys in a mapping, so a spec with `weight: 1` and, further
down, `weight: 5` in the same regularizer silently trains with 5. We compose the node tree first,
look for duplicates in it (merge keys `<<: *anchor` excepted: overriding a merged key is what they
are for), then construct the data from the same tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlProblem(ValueError):
    """The text is not YAML at all; the message says where and what is wrong."""


@dataclass(frozen=True)
class DuplicateKey:
    """A key given twice in one mapping; `path` is the spec path of the second one."""

    path: str
    message: str


def _position(mark: yaml.Mark | None) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _duplicates(root: yaml.Node, loader: yaml.SafeLoader) -> list[DuplicateKey]:
    found: list[DuplicateKey] = []
    seen: set[int] = set()  # aliases share nodes (and may form cycles): visit each node once

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")
        elif isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    walk(value_node, path)
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # complex keys never occur in specs; the constructor judges them
                key = loader.construct_object(key_node)
                child = f"{path}.{key}" if path else str(key)
                if key in first:
                    line = first[key].start_mark.line + 1
                    found.append(DuplicateKey(
                        child,
                        f"duplicate key {key!r}{_position(key_node.start_mark)} (first given at line "
                        f"{line}); YAML would silently keep only the last value: keep one",
                    ))
                else:
                    first[key] = key_node
                walk(value_node, child)

    walk(root, "")
    return found


def read_yaml(text: str) -> tuple[Any, list[DuplicateKey]]:
    """Parse one YAML (or JSON) document safely; return the data and every duplicate key.

    Raises YamlProblem, with line and column, for text that is not a single YAML document.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, []
        duplicates = _duplicates(root, loader)
        return loader.construct_document(root), duplicates
    except yaml.MarkedYAMLError as exc:
        what = ": ".join(str(part) for part in (exc.context, exc.problem) if part) or "syntax error"
        raise YamlProblem(
            f"not valid YAML{_position(exc.problem_mark)}: {what}; fix the syntax there"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
