"""Plain parameterised SQL for the step commit, the platform's hottest path.

The ORM spends ~1 ms of Python per step building and cloning queries; these helpers issue the
same guarded statements directly. Values are prepared by the model fields themselves
(`get_db_prep_save`), so JSON, UUIDs, datetimes and decimals are stored exactly as the ORM
would store them, on SQLite (>= 3.35, for RETURNING) and PostgreSQL alike.
"""

from __future__ import annotations

from typing import Any, cast

from django.db import connection, models


def _field(model: type[models.Model], name: str) -> models.Field:
    return cast(models.Field, model._meta.get_field(name))


def _name(model: type[models.Model], name: str) -> str:
    return connection.ops.quote_name(cast(str, _field(model, name).column))


def _column(model: type[models.Model], name: str, value: Any) -> tuple[str, Any]:
    field = _field(model, name)
    return _name(model, name), field.get_db_prep_save(value, connection)


def is_plain(values: dict[str, Any]) -> bool:
    """True when no value is an expression (F(), Coalesce...), which only the ORM can write."""
    return not any(hasattr(v, "resolve_expression") for v in values.values())


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
    q = connection.ops.quote_name
    assignments, params = [], []
    for name, value in sets.items():
        column, prepared = _column(model, name, value)
        assignments.append(f"{column} = %s")
        params.append(prepared)
    for name, amount in (increments or {}).items():
        column = _name(model, name)
        assignments.append(f"{column} = {column} + %s")
        params.append(amount)
    conditions, where_params = [f"{q(cast(str, model._meta.pk.column))} = %s"], [pk]
    for name, value in where.items():
        column, prepared = _column(model, name, value)
        conditions.append(f"{column} = %s")
        where_params.append(prepared)
    sql = (
        f"UPDATE {q(model._meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {' AND '.join(conditions)}"
    )
    if returning:
        sql += f" RETURNING {_name(model, returning)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params + where_params)
        if returning:
            row = cursor.fetchone()
            return None if row is None else row[0]
        return True if cursor.rowcount == 1 else None


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> list[int]:
    """INSERT rows (all with the same keys) in one statement; returns their primary keys."""
    if not rows:
        return []
    q = connection.ops.quote_name
    names = list(rows[0])
    columns = [_name(model, n) for n in names]
    placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
    params: list[Any] = []
    for row in rows:
        params.extend(_column(model, n, row[n])[1] for n in names)
    sql = (
        f"INSERT INTO {q(model._meta.db_table)} ({', '.join(columns)}) VALUES "
        f"{', '.join([placeholders] * len(rows))} RETURNING {q(cast(str, model._meta.pk.column))}"  # noqa: E501
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [r[0] for r in cursor.fetchall()]
