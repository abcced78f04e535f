"""The typed rows of schemas/rows.py against the Arrow schemas of schemas/tables.py, both ways: every
column has a key and every key a column, of a compatible type (nullability, lists, structs)."""

from __future__ import annotations

import types
import typing

import numpy as np
import pyarrow as pa
import pytest

from schemas.records import Reject
from schemas.rows import ROW_TYPES, RejectRow, reject_row
from schemas.tables import TABLES, arrow_schema

SCALARS: dict[type, typing.Callable[[pa.DataType], bool]] = {
    str: pa.types.is_string,
    bytes: pa.types.is_binary,
    float: pa.types.is_float64,
    int: pa.types.is_integer,
    bool: pa.types.is_boolean,
}
NUMPY = {np.int16: pa.int16(), np.int32: pa.int32(), np.int64: pa.int64(), np.float64: pa.float64()}


def optional(hint) -> tuple[object, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(members) == 1 and len(members) < len(typing.get_args(hint)):
            return members[0], True
    return hint, False


def mismatches(hint, arrow_type: pa.DataType, where: str) -> list[str]:
    """Where a (non-optional) type hint cannot hold the values of an Arrow type, and why."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if typing.is_typeddict(hint):
        if not pa.types.is_struct(arrow_type):
            return [f"{where}: {hint.__name__} for {arrow_type}"]
        return struct_mismatches(hint, list(arrow_type), where)
    if origin is list:
        if not (pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)):
            return [f"{where}: list for {arrow_type}"]
        return field_mismatches(args[0], arrow_type.value_field, f"{where}[]")
    if origin is np.ndarray:  # npt.NDArray[dtype]: a fixed-size list of that dtype
        dtype = typing.get_args(args[1])[0]
        if not pa.types.is_fixed_size_list(arrow_type) or arrow_type.value_type != NUMPY[dtype]:
            return [f"{where}: ndarray of {dtype.__name__} for {arrow_type}"]
        return []
    check = SCALARS.get(hint)
    if check is None or not check(arrow_type):
        return [f"{where}: {hint} for {arrow_type}"]
    return []


def field_mismatches(hint, field: pa.Field, where: str) -> list[str]:
    inner, nullable = optional(hint)
    problems = [f"{where}: None allowed but the column is not nullable"] if nullable and not field.nullable else []
    return problems + mismatches(inner, field.type, where)


def struct_mismatches(row_type, fields: list[pa.Field], where: str) -> list[str]:
    hints = typing.get_type_hints(row_type)
    columns = {field.name: field for field in fields}
    problems = [f"{where}.{name}: no such column" for name in hints.keys() - columns.keys()]
    problems += [f"{where}.{name}: column without a key" for name in columns.keys() - hints.keys()]
    for name in sorted(hints.keys() & columns.keys()):
        problems += field_mismatches(hints[name], columns[name], f"{where}.{name}")
    return problems


def test_every_table_has_a_row_type():
    assert ROW_TYPES.keys() == TABLES.keys()


@pytest.mark.parametrize("table", sorted(TABLES))
def test_row_type_matches_the_arrow_schema(table):
    assert struct_mismatches(ROW_TYPES[table], list(arrow_schema(table)), table) == []


def test_a_misspelled_or_retyped_key_is_caught():
    class Misspelled(typing.TypedDict):
        key: str
        source: str
        stage: str
        kind: str
        level: str
        reasn: str
        detail: int

    problems = struct_mismatches(Misspelled, list(arrow_schema("rejects")), "rejects")
    assert sorted(problems) == [
        "rejects.detail: <class 'int'> for string",
        "rejects.reasn: no such column",
        "rejects.reason: column without a key",
    ]


def test_reject_row_is_the_rejects_row_of_a_reject():
    reject = Reject(key="vindr/a", source="vindr", stage="image", reason="bad", detail="x", level="item")
    row: RejectRow = reject_row(reject)
    assert row == reject.model_dump()
    assert pa.Table.from_pylist([row], schema=arrow_schema("rejects")).to_pylist() == [row]
