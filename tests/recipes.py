"""Shared by the recipe tests: a shipped preset, validated, and one of its values checked against a paper."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from pc3d.config import load_preset, validate_preset


@functools.cache
def shipped(name: str) -> Any:
    """The shipped preset `name`, resolved (extends) and validated as a run would see it."""
    return validate_preset(load_preset(name), name)


def value(config: Any, path: str) -> Any:
    """config.a.b.c for path "a.b.c", as plain data: tuples become lists and pydantic sections dicts, so
    values written in a test's table compare equal."""
    node = config
    for part in path.split("."):
        node = getattr(node, part)
    if isinstance(node, tuple):
        node = list(node)
    if isinstance(node, list):
        return [item.model_dump() if hasattr(item, "model_dump") else item for item in node]
    return node.model_dump() if hasattr(node, "model_dump") else node


def check_recipe(name: str, key: str, expected: Any, source: str) -> None:
    """Assert preset `name` carries `expected` at `key`, naming the paper's `source` when it does not."""
    got = value(shipped(name), key)
    message = f"{name} {key}: {got!r}, {source} says {expected!r}"
    if isinstance(expected, float):
        assert got == pytest.approx(expected), message
    else:
        assert got == expected, message
