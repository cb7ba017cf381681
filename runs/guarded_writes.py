"""A guarded UPDATE and the INSERTs that depend on it, written at once: one PostgreSQL
statement, or one short SQLite transaction of plain statements.

A step's commit is the fenced UPDATE of its run, then rows that must exist only if that
UPDATE matched: the step, its checkpoint, its events (numbered from the run's new
`last_seq`) and the ledger upserts. Through Django's `atomic` that is BEGIN, five or six
statements and COMMIT, each a round trip on PostgreSQL unless pipelined, with autocommit
switched off and on around them.

On PostgreSQL they are one data-modifying CTE: every INSERT selects from the UPDATE's result,
so when the guard does not match nothing at all is written, and sent outside a transaction
it commits by itself (one statement is atomic). The UPDATE runs first (each INSERT reads its
result), so the run's row is locked before any ledger row, the order every other writer
keeps. Each table's rows travel as one JSON array, turned into rows of the table's own type
by `jsonb_populate_recordset` (columns by name, each value read by its column's type), so the
statement's text depends only on which tables it writes, not on how many rows: it is prepared
once per connection (runs/sql.py `_execute(prepared=True)`). Planning it afresh cost ~1.2 ms
a step (the UPDATE of a run plans over the table's indexes, 20 then); the prepared plan runs in
~0.25 ms.

On SQLite, where a statement is a function call, the same statements run between `BEGIN
IMMEDIATE` and `COMMIT` sent directly, without `atomic`'s bookkeeping.

Inside an `atomic` block (tests) either way is simply part of that transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from django.db import models

from runs.sql import (
    _db,
    _execute,
    _prepare,
    _quoted,
    _update_sql,
    guarded_update,
    insert_rows,
    send,
    split_where,
)


@dataclass(frozen=True, slots=True)
class Upsert:
    """An `INSERT ... ON CONFLICT DO UPDATE` of rows with distinct keys: the statement's two
    halves (see tenants.limits.upsert_parts) and the rows' values, each in the INSERT's
    column order."""

    model: type[models.Model]
    insert: str  # INSERT INTO table (columns)
    conflict: str  # ON CONFLICT (...) DO UPDATE SET ...
    rows: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Decrement:
    """`UPDATE model SET field = field - 1 WHERE id = pk AND field > 0`, done only when the
    guarded UPDATE matched: a counter given back by the write (a tenant's queue slot)."""

    model: type[models.Model]
    pk: int
    field: str


Converter = Callable[[Any], Any] | None


def _scalar(value: Any) -> Any:
    """A non-JSON column's value as JSON that its type's input function reads back exactly."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


@functools.cache
def _columns(
    model: type[models.Model], names: tuple[str, ...]
) -> tuple[tuple[str, Converter], ...]:
    """For each field name: its column, and how its value becomes JSON (None: as it is; a
    JSONField's value is the JSON itself)."""
    out = []
    for name in names:
        field = cast(models.Field, model._meta.get_field(name))
        plain = isinstance(field, models.JSONField)
        out.append((cast(str, field.column), None if plain else _scalar))
    return tuple(out)


def _as_json(model: type[models.Model], rows: Sequence[dict[str, Any]]) -> str:
    """`rows` (field name -> value, the same keys in each) as a JSON array of objects keyed by
    column, for jsonb_populate_recordset. JSON null becomes SQL NULL there, as Django writes
    None into a JSONField."""
    columns = _columns(model, tuple(rows[0]))
    return json.dumps(
        [
            {
                column: value if convert is None else convert(value)
                for (column, convert), value in zip(columns, row.values(), strict=True)
            }
            for row in rows
        ],
        separators=(",", ":"),
    )


def _table(model: type[models.Model]) -> str:
    return _db().ops.quote_name(model._meta.db_table)


@functools.lru_cache(maxsize=64)
def _statement(
    update: str,
    inserts: tuple[tuple[type[models.Model], tuple[str, ...]], ...],
    upserts: tuple[tuple[type[models.Model], str, str, tuple[str, ...]], ...],
    numbered: tuple[type[models.Model], tuple[str, ...], str],
    counter: str,
    decrements: tuple[tuple[type[models.Model], str], ...] = (),
) -> str:
    def columns(model: type[models.Model], names: tuple[str, ...]) -> str:
        return ", ".join(f"v.{_quoted(model, n)}" for n in names)

    def rows(model: type[models.Model]) -> str:
        return f"jsonb_populate_recordset(NULL::{_table(model)}, %s::jsonb) AS v"

    parts = [f"r AS ({update})"]
    for i, (model, names) in enumerate(inserts):
        head = f"INSERT INTO {_table(model)} ({', '.join(_quoted(model, n) for n in names)})"
        parts.append(f"i{i} AS ({head} SELECT {columns(model, names)} FROM r, {rows(model)})")
    for i, (model, insert, conflict, names) in enumerate(upserts):
        # WHERE true: without it, ON CONFLICT would parse as a join's ON.
        parts.append(
            f"u{i} AS ({insert} SELECT {columns(model, names)} FROM r, {rows(model)} "
            f"WHERE true {conflict})"
        )
    for i, (model, field) in enumerate(decrements):
        column, pk = _quoted(model, field), _db().ops.quote_name(cast(str, model._meta.pk.column))
        parts.append(
            f"d{i} AS (UPDATE {_table(model)} SET {column} = {column} - 1 FROM r "
            f"WHERE {_table(model)}.{pk} = %s AND {column} > 0)"
        )
    model, names, seq = numbered
    head = f"INSERT INTO {_table(model)} ({', '.join(_quoted(model, n) for n in (*names, seq))})"
    pk = _db().ops.quote_name(cast(str, model._meta.pk.column))
    parts.append(
        f"e AS ({head} SELECT {columns(model, names)}, r.{counter} - %s + v.{_quoted(model, seq)} "
        f"FROM r, {rows(model)} RETURNING {pk}, {_quoted(model, seq)})"
    )
    return f"WITH {', '.join(parts)} SELECT * FROM e ORDER BY 2"


Rows = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class GuardedWrite:
    """What `update_then_insert` writes (see there)."""

    model: type[models.Model]
    pk: int
    where: dict[str, Any]
    sets: dict[str, Any]
    counter: str
    numbered: tuple[type[models.Model], Rows, str]
    inserts: Sequence[tuple[type[models.Model], Rows]]
    upserts: Sequence[Upsert]
    increments: dict[str, int]
    decrements: Sequence[Decrement]


def update_then_insert(
    model: type[models.Model], pk: int, **write: Any
) -> list[tuple[int, int]] | None:
    """`send_update_then_insert`, its result read at once: committed before it returns,
    unless called inside a transaction."""
    return send_update_then_insert(model, pk, **write)()


def send_update_then_insert(
    model: type[models.Model],
    pk: int,
    *,
    where: dict[str, Any],
    sets: dict[str, Any],
    counter: str,
    numbered: tuple[type[models.Model], Rows, str],
    inserts: Sequence[tuple[type[models.Model], Rows]] = (),
    upserts: Sequence[Upsert] = (),
    increments: dict[str, int] | None = None,
    decrements: Sequence[Decrement] = (),
) -> Callable[[], list[tuple[int, int]] | None]:
    """UPDATE `model`'s row `pk` if it still matches `where` (as `guarded_update` reads it: None
    means IS NULL, NOT_NULL means IS NOT NULL), setting `sets`, adding `increments` and adding
    to its integer `counter` the number of `numbered` rows; if it matched, INSERT `inserts`
    (each a model and rows with the same keys), apply `upserts` and `decrements`, and INSERT
    the `numbered` rows (model, rows, field) with that field numbered up to the counter's new
    value (`counter - n + 1` .. `counter`, in order: a run's events and their `seq`).

    Sent now; the returned function reads the result: the numbered rows' (pk, number) in
    order, or None when the guard did not match (then nothing was written). On PostgreSQL
    inside runs.sql's `pipelined`, read it after the block ends: the block's end brings it
    with everything sent before (read inside, it costs a round trip of its own). On SQLite it
    is written at once. `numbered` must hold at least one row."""
    assert numbered[1], "update_then_insert needs a numbered row to tell a match"
    w = GuardedWrite(
        model, pk, where, sets, counter, numbered, inserts, upserts, increments or {}, decrements
    )
    if _db().vendor == "postgresql":
        return _one_statement(w)
    written = _one_transaction(w)
    return lambda: written


def _one_statement(w: GuardedWrite) -> Callable[[], list[tuple[int, int]] | None]:
    numbered_model, rows, seq = w.numbered
    n = len(rows)
    db = _db()
    where, null, not_null = split_where(w.where)
    update = _update_sql(
        w.model,
        tuple(w.sets),
        (w.counter, *w.increments),
        tuple(where),
        w.counter,
        null,
        not_null,
    )
    params = [
        *_prepare(w.model, w.sets, db),
        n,
        *w.increments.values(),
        w.pk,
        *_prepare(w.model, where, db),
    ]
    shapes = []
    for target, target_rows in w.inserts:
        shapes.append((target, tuple(target_rows[0])))
        params.append(_as_json(target, target_rows))
    upsert_shapes = []
    for u in w.upserts:
        upsert_shapes.append((u.model, u.insert, u.conflict, tuple(u.rows[0])))
        params.append(_as_json(u.model, u.rows))
    params.extend(d.pk for d in w.decrements)
    params.append(n)
    params.append(_as_json(numbered_model, [{**row, seq: k} for k, row in enumerate(rows, 1)]))
    sql = _statement(
        update,
        tuple(shapes),
        tuple(upsert_shapes),
        (numbered_model, tuple(rows[0]), seq),
        _quoted(w.model, w.counter),
        tuple((d.model, d.field) for d in w.decrements),
    )
    read = send(sql, params, prepared=True)

    def numbers() -> list[tuple[int, int]] | None:
        result = read()
        return [(row[0], row[1]) for row in result] if result else None

    return numbers


@functools.lru_cache(maxsize=64)
def _upsert_sql(insert: str, conflict: str, width: int, count: int) -> str:
    row = "(" + ", ".join(["%s"] * width) + ")"
    return f"{insert} VALUES {', '.join([row] * count)} {conflict}"


def _decrement_sql(d: Decrement) -> tuple[str, list[Any]]:
    table, column = _table(d.model), _quoted(d.model, d.field)
    pk = _db().ops.quote_name(cast(str, d.model._meta.pk.column))
    return f"UPDATE {table} SET {column} = {column} - 1 WHERE {pk} = %s AND {column} > 0", [d.pk]


def _one_transaction(w: GuardedWrite) -> list[tuple[int, int]] | None:
    numbered_model, rows, seq = w.numbered
    db = _db()
    own = not db.in_atomic_block
    if own:
        _execute(db, "BEGIN IMMEDIATE", [], fetch=None)
    try:
        last = guarded_update(
            w.model,
            w.pk,
            where=w.where,
            sets=w.sets,
            increments={w.counter: len(rows), **w.increments},
            returning=w.counter,
        )
        if last is None:
            if own:
                _execute(db, "ROLLBACK", [], fetch=None)
            return None
        for target, target_rows in w.inserts:
            insert_rows(target, target_rows, returning=False)
        for u in w.upserts:
            params = [v for row in u.rows for v in _prepare(u.model, row, db)]
            sql = _upsert_sql(u.insert, u.conflict, len(u.rows[0]), len(u.rows))
            _execute(db, sql, params, fetch=None)
        for d in w.decrements:
            sql, params = _decrement_sql(d)
            _execute(db, sql, params, fetch=None)
        first = last - len(rows) + 1
        numbers = range(first, last + 1)
        pks = insert_rows(
            numbered_model, [{**row, seq: k} for k, row in zip(numbers, rows, strict=True)]
        )
        if own:
            _execute(db, "COMMIT", [], fetch=None)
    except BaseException:
        if own and db.connection is not None and db.connection.in_transaction:
            db.connection.rollback()
        raise
    return list(zip(pks, numbers, strict=True))
