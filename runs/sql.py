"""Plain parameterised SQL for the step commit, the platform's hottest path.

The ORM spends ~1 ms of Python per step building and cloning queries; these helpers issue the
same guarded statements directly. Values are prepared by the model fields themselves
(`get_db_prep_save`), so JSON, UUIDs, datetimes and decimals are stored exactly as the ORM
would store them, on SQLite (>= 3.35, for RETURNING) and PostgreSQL alike. Statement text is
built once per shape and cached: a process talks to one database.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper


def _db() -> BaseDatabaseWrapper:
    # The real wrapper, not the thread-local proxy: every attribute read on the proxy costs a
    # context-local lookup, and a step reads dozens.
    return connections[DEFAULT_DB_ALIAS]


def is_plain(values: dict[str, Any]) -> bool:
    """True when no value is an expression (F(), Coalesce...), which only the ORM can write."""
    return not any(hasattr(v, "resolve_expression") for v in values.values())


@functools.cache
def _fields(model: type[models.Model], names: tuple[str, ...]) -> tuple[models.Field, ...]:
    return tuple(cast(models.Field, model._meta.get_field(n)) for n in names)


@functools.cache
def _quoted(model: type[models.Model], name: str) -> str:
    column = cast(str, cast(models.Field, model._meta.get_field(name)).column)
    return _db().ops.quote_name(column)


@functools.cache
def _update_sql(
    model: type[models.Model],
    sets: tuple[str, ...],
    increments: tuple[str, ...],
    where: tuple[str, ...],
    returning: str | None,
) -> str:
    q = _db().ops.quote_name
    assignments = [f"{_quoted(model, n)} = %s" for n in sets]
    assignments += [f"{_quoted(model, n)} = {_quoted(model, n)} + %s" for n in increments]
    conditions = [f"{q(cast(str, model._meta.pk.column))} = %s"]
    conditions += [f"{_quoted(model, n)} = %s" for n in where]
    sql = (
        f"UPDATE {q(model._meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {' AND '.join(conditions)}"
    )
    if returning:
        sql += f" RETURNING {_quoted(model, returning)}"
    return sql


@functools.cache
def _insert_sql(model: type[models.Model], names: tuple[str, ...], count: int) -> str:
    q = _db().ops.quote_name
    columns = ", ".join(_quoted(model, n) for n in names)
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    return (
        f"INSERT INTO {q(model._meta.db_table)} ({columns}) VALUES "
        f"{', '.join([row] * count)} RETURNING {q(cast(str, model._meta.pk.column))}"
    )


def _prepare(
    model: type[models.Model],
    values: dict[str, Any],
    db: BaseDatabaseWrapper,
) -> list[Any]:
    fields = _fields(model, tuple(values))
    return [f.get_db_prep_save(v, db) for f, v in zip(fields, values.values(), strict=True)]


def guarded_update(
    model: type[models.Model],
    pk: int,
    *,
    where: dict[str, Any],
    sets: dict[str, Any],
    increments: dict[str, int | float] | None = None,
    returning: str | None = None,
) -> Any:
    """UPDATE one row if it still matches `where`. Returns the `returning` column's new value,
    True when no column is asked for, or None when the guard did not match."""
    db = _db()
    increments = increments or {}
    sql = _update_sql(model, tuple(sets), tuple(increments), tuple(where), returning)
    params = [*_prepare(model, sets, db), *increments.values(), pk, *_prepare(model, where, db)]
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            row = cursor.fetchone()
            return None if row is None else row[0]
        return True if cursor.rowcount == 1 else None


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> list[int]:
    """INSERT rows (all with the same keys) in one statement; returns their primary keys."""
    if not rows:
        return []
    db = _db()
    sql = _insert_sql(model, tuple(rows[0]), len(rows))
    params: list[Any] = []
    for row in rows:
        params.extend(_prepare(model, row, db))
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return [r[0] for r in cursor.fetchall()]
