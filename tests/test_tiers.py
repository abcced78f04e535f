"""The fast tier's tables (``tests/tiers.py``) name only what exists: a renamed test module, test or
fixture would otherwise drop out of them silently, and a slow test would join ``make test-fast``."""

import ast
from pathlib import Path

from tiers import SLOW_FIXTURES, SLOW_MODULES, SLOW_TESTS

TESTS = Path(__file__).resolve().parent


def module_path(module: str) -> Path | None:
    """``tests/<module>.py``, or one in a folder below (pytest names a module by its file name)."""
    return next(iter(sorted(TESTS.rglob(f"{module}.py"))), None)


def functions_of(module: str) -> set[str]:
    """Every function defined in the test module (tests and fixtures), at any depth."""
    path = module_path(module)
    tree = ast.parse(path.read_text()) if path else ast.Module(body=[], type_ignores=[])
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def stale_names() -> list[str]:
    """What the slow tables name that does not exist: ``module`` or ``module::function``."""
    named = set(SLOW_MODULES) | set(SLOW_TESTS) | (set(SLOW_FIXTURES) - {""})
    stale = sorted(module for module in named if module_path(module) is None)
    shared = functions_of("conftest")
    stale += [
        f"{module}::{name}"
        for table in (SLOW_TESTS, {k: v for k, v in SLOW_FIXTURES.items() if k})
        for module, names in sorted(table.items())
        for name in sorted(names)
        if module_path(module) is not None and name not in functions_of(module) | shared
    ]
    return stale + [f"conftest::{name}" for name in sorted(SLOW_FIXTURES[""]) if name not in shared]


def test_every_module_test_and_fixture_the_slow_tables_name_exists():
    assert stale_names() == []


def test_a_renamed_test_or_module_is_named(monkeypatch):
    monkeypatch.setitem(SLOW_TESTS, "test_write", SLOW_TESTS["test_write"] | {"test_renamed_since"})
    monkeypatch.setitem(SLOW_FIXTURES, "test_gone", {"built"})
    assert stale_names() == ["test_gone", "test_write::test_renamed_since"]
