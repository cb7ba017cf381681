"""Plain parameterised SQL for the step commit, the platform's hottest path.

The ORM spends ~1 ms of Python per step building and cloning queries; these helpers issue the
same guarded statements directly. Values are prepared by the model fields themselves
(`get_db_prep_save`), so JSON, UUIDs, datetimes and decimals are stored exactly as the ORM
would store them, on SQLite (>= 3.35, for RETURNING) and PostgreSQL alike. Statement text is
built once per shape and cached: a process talks to one database.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX

log = logging.getLogger(__name__)

# A `where` value of guarded_update meaning IS NOT NULL (None means IS NULL).
NOT_NULL = object()


class _Pipeline(threading.local):
    """The psycopg pipeline open on this thread's connection (see `pipelined`), and the checks
    to run once its results are in (`check_at_end`)."""

    pipe: Any = None
    checks: list[Callable[[], None]] | None = None


_open = _Pipeline()


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
    returning: str | tuple[str, ...] | None,
    null: tuple[str, ...] = (),
    not_null: tuple[str, ...] = (),
) -> str:
    q = _db().ops.quote_name
    assignments = [f"{_quoted(model, n)} = %s" for n in sets]
    assignments += [f"{_quoted(model, n)} = {_quoted(model, n)} + %s" for n in increments]
    conditions = [f"{q(cast(str, model._meta.pk.column))} = %s"]
    conditions += [f"{_quoted(model, n)} = %s" for n in where]
    conditions += [f"{_quoted(model, n)} IS NULL" for n in null]
    conditions += [f"{_quoted(model, n)} IS NOT NULL" for n in not_null]
    sql = (
        f"UPDATE {q(model._meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {' AND '.join(conditions)}"
    )
    if returning:
        names = (returning,) if isinstance(returning, str) else returning
        sql += " RETURNING " + ", ".join(_quoted(model, n) for n in names)
    return sql


@functools.cache
def _insert_sql(
    model: type[models.Model], names: tuple[str, ...], count: int, returning: bool = True
) -> str:
    q = _db().ops.quote_name
    columns = ", ".join(_quoted(model, n) for n in names)
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    sql = f"INSERT INTO {q(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * count)}"
    return sql + f" RETURNING {q(cast(str, model._meta.pk.column))}" if returning else sql


# Fields whose database value is the Python value itself when that is a plain int/str/bool.
_PLAIN_TYPES = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
        "CharField",
        "TextField",
        "SlugField",
        "BooleanField",
        "ForeignKey",
    }
)
_PLAIN_VALUES = (int, str, bool)

Preparer = Callable[[Any, BaseDatabaseWrapper], Any]


def _preparer(field: models.Field) -> Preparer:
    """The field's own `get_db_prep_save`, minus the layers a plain value does not need."""
    if isinstance(field, models.JSONField):
        encoder = field.encoder

        def prep_json(value: Any, db: BaseDatabaseWrapper) -> Any:
            if value is None or hasattr(value, "resolve_expression"):
                return field.get_db_prep_save(value, db)
            return db.ops.adapt_json_value(value, encoder)

        return prep_json
    if isinstance(field, models.DateTimeField):
        return _prep_datetime(field)
    if field.get_internal_type() in _PLAIN_TYPES:

        def prep_plain(value: Any, db: BaseDatabaseWrapper) -> Any:
            if value is None or type(value) in _PLAIN_VALUES:
                return value
            return field.get_db_prep_save(value, db)

        return prep_plain
    return field.get_db_prep_save


def _prep_datetime(field: models.DateTimeField) -> Preparer:
    """Aware datetimes as the backend stores them. On SQLite that is the UTC wall time as
    text (Django's `adapt_datetimefield_value` with the connection's UTC time zone). A step
    writes one timestamp on many rows, so the last conversion is remembered."""
    last: tuple[Any, Any] = (None, None)

    def prep(value: Any, db: BaseDatabaseWrapper) -> Any:
        nonlocal last
        seen, prepared = last  # one tuple read: safe when threads share the closure
        if value is seen:
            return prepared
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            return field.get_db_prep_save(value, db)
        if db.vendor == "sqlite" and db.timezone_name == "UTC":
            prepared = value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")
        else:
            prepared = db.ops.adapt_datetimefield_value(value)
        last = (value, prepared)
        return prepared

    return prep


@functools.cache
def _preparers(model: type[models.Model], names: tuple[str, ...]) -> tuple[Preparer, ...]:
    return tuple(_preparer(f) for f in _fields(model, names))


def _prepare(
    model: type[models.Model],
    values: dict[str, Any],
    db: BaseDatabaseWrapper,
) -> list[Any]:
    preparers = _preparers(model, tuple(values))
    return [prep(v, db) for prep, v in zip(preparers, values.values(), strict=True)]


@functools.cache
def _native(sql: str, vendor: str) -> str:
    """The statement in the DB-API module's own placeholder style (sqlite3 takes `?`), as
    Django's SQLite cursor converts it (`%%` is a literal `%`)."""
    if vendor != "sqlite":
        return sql
    return FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")


class pipelined:  # noqa: N801 - used like a function: `with pipelined() as pipe:`
    """On PostgreSQL, send the block's statements without waiting for each one's result.

    A step's transaction is BEGIN, the fenced UPDATE of the run (whose result it reads), then
    INSERTs and the ledger upsert whose results nobody reads, then COMMIT: in a psycopg
    pipeline that is two round trips instead of seven. A statement that reads its result
    (a fetch, or a rowcount through `_execute`) waits for everything queued before it, so
    effects keep the statements' order, and an error still surfaces before the commit
    succeeds (at the latest, as the commit's error). The ORM does not know about pipelines
    (an UPDATE's count reads -1 before its result arrives): call `end()` before code that
    uses the ORM's results. Nothing changes on SQLite, where a statement is a function call,
    nor while queries are logged (tests count them).

    Inside another `pipelined` block this one is part of it: its `end()` does nothing, the
    outer block's ends the pipeline. Open it inside `transaction.atomic()`, not around it:
    psycopg syncs an open pipeline (a round trip) whenever autocommit is switched, as atomic
    does on entry and exit; inside, the BEGIN still goes with the block's first statement."""

    def __init__(self) -> None:
        self.pipe: Any = None

    def __enter__(self) -> pipelined:
        db = _db()
        if _open.pipe is not None:
            return self
        if db.vendor == "postgresql" and not (db.queries_logged or db.execute_wrappers):
            db.ensure_connection()
            self.pipe = db.connection.pipeline()
            self.pipe.__enter__()
            _open.pipe = self.pipe
        return self

    def end(self) -> None:
        """Wait for every queued result and leave pipeline mode (the transaction goes on),
        then run the checks sent statements left for then (`check_at_end`)."""
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            checks, _open.checks = _open.checks or [], None
            _open.pipe = None
            # A queued statement's error surfaces here: as Django's exception, like any other
            # (a deadlock is an OperationalError that retry_transient retries).
            with _db().wrap_database_errors:
                pipe.__exit__(None, None, None)
            for check in checks:
                check()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.end()
            return
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            _open.pipe, _open.checks = None, None
            try:
                pipe.__exit__(exc_type, exc, tb)
            except Exception:  # noqa: BLE001 - the error being raised says what went wrong
                log.debug("leaving the pipeline after an error", exc_info=True)


def check_at_end(check: Callable[[], None]) -> None:
    """Run `check` (which reads a sent statement's result and raises if it is not what the
    caller counted on) when the open pipeline ends, before the transaction can commit; at
    once when no pipeline is open. For a statement whose result the caller knows ahead, as
    long as nothing went wrong: then nothing waits for it, and a surprise still fails the
    transaction."""
    if _open.pipe is None:
        check()
        return
    if _open.checks is None:
        _open.checks = []
    _open.checks.append(check)


def execute(sql: str, params: list[Any], *, fetch: bool | None, prepared: bool = False) -> Any:
    """`_execute` on the default database: a statement of plain SQL written for both
    backends (PostgreSQL when `prepared`, its parameters typed by their place)."""
    return _execute(_db(), sql, params, fetch=fetch, prepared=prepared)


def send(sql: str, params: list[Any], *, prepared: bool = False) -> Callable[[], list[Any]]:
    """`execute`'s statement sent now, its rows read when the returned function is called:
    inside `pipelined`, read after the block ends, it costs no round trip of its own (the
    block's end brings every result; a result read inside the block waits for one more)."""
    db = _db()
    cursor = _send(db, sql, params, prepared=prepared)

    def rows() -> list[Any]:
        try:
            return cast(list[Any], _read(db, cursor, True))
        finally:
            cursor.close()

    return rows


def _execute(
    db: BaseDatabaseWrapper,
    sql: str,
    params: list[Any],
    *,
    fetch: bool | None,
    prepared: bool = False,
) -> Any:
    """Run one statement; returns its rows when `fetch`, its rowcount when False, nothing
    when None (inside `pipelined`, such a statement does not wait for its result).

    `prepared` (PostgreSQL): bind the parameters on the server and keep the statement
    prepared on the connection, so the server plans its shape once instead of every time:
    for a statement that is expensive to plan (the step commit's UPDATE of a run plans over
    the table's indexes, 20 when measured: ~0.4 ms, its whole statement ~1.2 ms) and sent
    again and again.
    Each parameter's type must follow from its place in the SQL (the column it is assigned
    or compared to, or a cast), as server-side binding needs."""
    cursor = _send(db, sql, params, prepared=prepared)
    try:
        if fetch is None:
            return None
        return _read(db, cursor, fetch)
    finally:
        cursor.close()


def _send(db: BaseDatabaseWrapper, sql: str, params: list[Any], *, prepared: bool = False) -> Any:
    """Execute one statement and return its cursor, the result not yet read (inside
    `pipelined`, not yet arrived): the caller reads it with `_read` and closes the cursor.

    When nothing observes the connection (no query log, no execute wrappers: production),
    the statement goes to the DB-API cursor directly, with the checks Django's cursor would
    make (thread, broken transaction, error wrapping). Django's cursor costs ~15 us per
    statement on top (its wrappers, and on SQLite a regex rewriting `%s` each time), which
    is a tenth of an effectful step. Otherwise Django's cursor runs it, so tests and the
    debug tooling see every statement."""
    if db.queries_logged or db.execute_wrappers or db.connection is None:
        cursor = db.cursor()
        try:
            cursor.execute(sql, params)
        except BaseException:
            cursor.close()
            raise
        return cursor
    db.validate_thread_sharing()
    db.validate_no_broken_transaction()
    server = prepared and db.vendor == "postgresql"
    # psycopg.Cursor binds on the server; Django's cursor factory, on the client.
    raw: Any = psycopg.Cursor(db.connection) if server else db.connection.cursor()
    try:
        with db.wrap_database_errors:
            if server:
                raw.execute(sql, params, prepare=True)
            else:
                raw.execute(_native(sql, db.vendor), params)
    except BaseException:
        raw.close()
        raise
    return raw


def _read(db: BaseDatabaseWrapper, cursor: Any, fetch: bool) -> Any:
    """A sent statement's rows (`fetch`) or rowcount. In a pipeline this waits for the
    result, and with it for every statement sent before it: statements sent together and
    then read share one round trip."""
    with db.wrap_database_errors:
        if fetch:
            return cursor.fetchall()
        if _open.pipe is not None:
            _open.pipe.sync()  # a rowcount is only known once the result is in
        return cursor.rowcount


def split_where(
    where: dict[str, Any],
) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """A guard's plain conditions (compared to a parameter), and the names it wants IS NULL
    (None) and IS NOT NULL (NOT_NULL), as `_update_sql` takes them."""
    null = tuple(n for n, v in where.items() if v is None)
    not_null = tuple(n for n, v in where.items() if v is NOT_NULL)
    if null or not_null:
        where = {n: v for n, v in where.items() if v is not None and v is not NOT_NULL}
    return where, null, not_null


def guarded_update(
    model: type[models.Model],
    pk: int,
    *,
    where: dict[str, Any],
    sets: dict[str, Any],
    increments: dict[str, int | float] | None = None,
    returning: str | tuple[str, ...] | None = None,
) -> Any:
    """UPDATE one row if it still matches `where` (None there means IS NULL, NOT_NULL means
    IS NOT NULL).
    Returns the `returning` column's new value (a tuple of them for a tuple of names), True
    when no column is asked for, or None when the guard did not match.

    Prepared on PostgreSQL (see `_execute`): its shapes are few and fixed, and an UPDATE of a
    run plans over all of the table's indexes (20 when measured: ~0.4 ms; a run's claim, each
    step, its end and its slots' release are such UPDATEs)."""
    return send_guarded_update(
        model, pk, where=where, sets=sets, increments=increments, returning=returning
    )()


def send_guarded_update(
    model: type[models.Model],
    pk: int,
    *,
    where: dict[str, Any],
    sets: dict[str, Any],
    increments: dict[str, int | float] | None = None,
    returning: str | tuple[str, ...] | None = None,
) -> Callable[[], Any]:
    """`guarded_update` sent now; the returned function reads what it returns (inside
    `pipelined`, what is sent before that call shares its round trip)."""
    db = _db()
    increments = increments or {}
    where, null, not_null = split_where(where)
    sql = _update_sql(
        model, tuple(sets), tuple(increments), tuple(where), returning, null, not_null
    )
    params = [*_prepare(model, sets, db), *increments.values(), pk, *_prepare(model, where, db)]
    cursor = _send(db, sql, params, prepared=True)

    def read() -> Any:
        try:
            if not returning:
                return True if _read(db, cursor, False) == 1 else None
            rows = _read(db, cursor, True)
        finally:
            cursor.close()
        if not rows:
            return None
        return rows[0][0] if isinstance(returning, str) else tuple(rows[0])

    return read


def _insert_statement(
    db: BaseDatabaseWrapper, model: type[models.Model], rows: list[dict[str, Any]], returning: bool
) -> tuple[str, list[Any]]:
    """The INSERT of `rows` (all with the same keys) and its parameters."""
    params: list[Any] = []
    for row in rows:
        params.extend(_prepare(model, row, db))
    return _insert_sql(model, tuple(rows[0]), len(rows), returning), params


def send_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> Callable[[], list[int]]:
    """`insert_rows` sent now, the rows' primary keys read when the returned function is
    called: inside `pipelined`, nothing waits for the INSERT until then (a caller that needs
    the keys only after the commit, e.g. to publish, costs no round trip of its own).
    Outside a pipeline they are read at once: SQLite, for one, refuses to COMMIT while a
    RETURNING statement has rows left unread."""
    if _open.pipe is None:
        stored = insert_rows(model, rows)
        return lambda: stored
    db = _db()
    cursor = _send(db, *_insert_statement(db, model, rows, True), prepared=True)

    def keys() -> list[int]:
        try:
            return [r[0] for r in _read(db, cursor, True)]
        finally:
            cursor.close()

    return keys


def insert_rows(
    model: type[models.Model], rows: list[dict[str, Any]], *, returning: bool = True
) -> list[int]:
    """INSERT rows (all with the same keys) in one statement; returns their primary keys
    (none when not `returning`: then, in a pipeline, nothing waits for the INSERT).

    Prepared on PostgreSQL (see `_execute`): each value's type is its column's, and a run's
    creation sends the same few INSERTs every time (the run, its audit row, its first event),
    which the server otherwise parsed and planned anew for each run (~0.3 ms of its ~2 ms)."""
    if not rows:
        return []
    db = _db()
    sql, params = _insert_statement(db, model, rows, returning)
    if not returning:
        _execute(db, sql, params, fetch=None, prepared=True)
        return []
    return [r[0] for r in _execute(db, sql, params, fetch=True, prepared=True)]


@functools.cache
def _compiled(build: Callable[[], models.QuerySet]) -> tuple[str, tuple[Any, ...]]:
    queryset = build()
    return queryset.query.get_compiler(using=queryset.db).as_sql()


def fetch_all(build: Callable[[], models.QuerySet]) -> list[tuple[Any, ...]]:
    """Rows of a fixed-shape ORM query (no parameters of its own), compiled once per process:
    `build` returns the queryset; the ORM writes the SQL, this only skips rebuilding it.
    Prepared on PostgreSQL (see `_execute`), its parameters written in (`_literal`)."""
    return send_all(build)()


def send_all(build: Callable[[], models.QuerySet]) -> Callable[[], list[tuple[Any, ...]]]:
    """`fetch_all`'s query sent now, its rows read when the returned function is called:
    inside `pipelined`, whatever else is sent before that call shares its round trip."""
    if _db().vendor == "postgresql":
        return send(_literal(build), [], prepared=True)
    sql, params = _compiled(build)
    return send(sql, list(params))


@functools.cache
def _literal(build: Callable[[], models.QuerySet]) -> str:
    """The compiled query with its (fixed) parameters written in as literals: prepared with
    parameters, a generic plan could not prove a partial index's predicate (`status =
    'queued'`) from `status = $1`, and would scan instead. `%` is doubled back for the
    placeholder parser."""
    sql, params = _compiled(build)
    db = _db()
    db.ensure_connection()
    return psycopg.ClientCursor(db.connection).mogrify(sql, params).replace("%", "%%")


def insert_instance(obj: models.Model, *, returning: bool = True) -> None:
    """INSERT a new model instance as `save()` would (defaults and auto_now_add applied by the
    fields' own `pre_save`), without the ORM's per-call query building. Sets its pk, unless
    not `returning` (then, in a pipeline, nothing waits for the INSERT)."""
    if not returning:
        insert_rows(type(obj), [_instance_values(obj)], returning=False)
        obj._state.adding = False
        return
    send_instance(obj)()


def send_instance(obj: models.Model) -> Callable[[], None]:
    """`insert_instance` sent now; its pk is read and set when the returned function is called
    (inside `pipelined`, what is sent before that call shares the INSERT's round trip)."""
    keys = send_rows(type(obj), [_instance_values(obj)])

    def read() -> None:
        (obj.pk,) = keys()
        obj._state.adding = False
        obj._state.db = DEFAULT_DB_ALIAS

    return read


def _instance_values(obj: models.Model) -> dict[str, Any]:
    return {
        f.name: f.pre_save(obj, add=True)
        for f in type(obj)._meta.concrete_fields
        if not f.primary_key or getattr(obj, f.attname) is not None
    }
