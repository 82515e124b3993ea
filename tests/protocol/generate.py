"""Shared by the property tests: schemas per message kind, and one-path mutations."""

import copy
from typing import Any

from hypothesis import strategies as st

from diag_protocol import SCHEMA


def schema_for(kind: str) -> dict:
    """The schema of one message kind, standalone (its $defs attached)."""
    sch = copy.deepcopy(SCHEMA["$defs"][kind])
    sch["$defs"] = SCHEMA["$defs"]
    return sch


def depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max(map(depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(depth, v), default=0)
    return 0


def in_range(v: Any) -> bool:
    """Every number fits what the decoder takes (64-bit integers; design.md)."""
    if isinstance(v, dict):
        return all(map(in_range, v.values()))
    if isinstance(v, list):
        return all(map(in_range, v))
    if isinstance(v, int) and not isinstance(v, bool):
        return -(2**63) <= v <= 2**64 - 1
    return True


def mutate_one_path(msg: Any, data: Any, values: Any) -> Any:
    """``msg`` with the value at one randomly walked path replaced by a draw from ``values``
    (or unchanged, when the walk stops at the root); ``msg`` itself is not modified."""
    path, node = [], msg
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                        else range(len(node))))
        path.append(key)
        node = node[key]
    mutated = copy.deepcopy(msg)
    if path:
        target = mutated
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = data.draw(values)
    return mutated
