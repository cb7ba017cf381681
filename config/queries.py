"""ORM queries whose SQL is built once per process.

Django compiles a queryset's SQL on every evaluation: for a query with three joins that is
~1.5 ms of Python against 0.1 ms in the database, on paths every run and every API request
take (a worker's claim, an API key's lookup). `fetch_models` keeps what Django's
ModelIterable works out for a query of fixed shape (its SQL, each model's columns, the
related objects' builders) and binds the one parameter per call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.query import get_related_populators

M = TypeVar("M", bound=models.Model)

# Stands for the one parameter of a `fetch_models` query while its SQL is compiled (a text
# column's filter gets it as text).
PARAM = -8_675_309
_PARAM_FORMS = (PARAM, str(PARAM))


@dataclass(frozen=True)
class _ModelQuery:
    sql: str
    params: tuple[Any, ...]
    model: type[models.Model]
    init_list: list[str]
    start: int
    end: int
    populators: list[Any]
    converters: dict[int, Any]
    apply_converters: Callable[..., Any]


@functools.cache
def _model_query(build: Callable[[Any], models.QuerySet]) -> _ModelQuery:
    """What Django's ModelIterable works out per query, worked out once: the SQL (with PARAM
    where the parameter goes), the columns of each model and the related objects' builders."""
    queryset = build(PARAM)
    compiler = queryset.query.get_compiler(using=queryset.db)
    sql, params = compiler.as_sql()
    klass_info, select = compiler.klass_info, compiler.select
    fields = klass_info["select_fields"]
    start, end = fields[0], fields[-1] + 1
    return _ModelQuery(
        sql=sql,
        params=tuple(params),
        model=klass_info["model"],
        init_list=[f[0].target.attname for f in select[start:end]],
        start=start,
        end=end,
        # Django 5.2's signature (django-stubs describes a later one, with fetch_mode).
        populators=get_related_populators(klass_info, select, queryset.db),  # type: ignore[call-arg]
        converters=compiler.get_converters([s[0] for s in select[: compiler.col_count]]),
        apply_converters=compiler.apply_converters,
    )


def fetch_models(build: Callable[[Any], models.QuerySet[M]], param: Any) -> list[M]:
    """The model instances (with their select_related objects) of the ORM query `build(param)`,
    compiled once per process: a query with three joins cost ~1 ms of SQL building per call,
    more than the database took. `build` takes the one parameter and must pass it through to
    the query's SQL unchanged (a primary key, say)."""
    return send_models(build, param)()


def send_models(build: Callable[[Any], models.QuerySet[M]], param: Any) -> Callable[[], list[M]]:
    """`fetch_models`' query sent now, its instances built when the returned function is
    called: inside runs.sql's `pipelined`, it shares a round trip with what was sent before."""
    q = _model_query(build)
    params = [param if p in _PARAM_FORMS else p for p in q.params]
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql" and not (db.queries_logged or db.execute_wrappers):
        # Prepared: planning the claim's three joins cost ~0.5 ms a run, more than running
        # them. Every such query seeks by its parameter (a primary key, a key's prefix).
        db.ensure_connection()
        db.validate_thread_sharing()
        db.validate_no_broken_transaction()
        server = psycopg.Cursor(db.connection)
        try:
            with db.wrap_database_errors:
                server.execute(q.sql, params, prepare=True)
        except BaseException:
            server.close()
            raise

        def fetched() -> list[M]:
            try:
                with db.wrap_database_errors:
                    return _instances(q, server.fetchall())
            finally:
                server.close()

        return fetched
    with db.cursor() as cursor:
        cursor.execute(q.sql, params)
        rows = cursor.fetchall()
    return lambda: _instances(q, rows)


def _instances(q: _ModelQuery, rows: Any) -> list[Any]:
    if q.converters:
        rows = q.apply_converters(rows, q.converters)
    out = []
    for row in rows:
        obj = q.model.from_db(DEFAULT_DB_ALIAS, q.init_list, row[q.start : q.end])
        for populator in q.populators:
            populator.populate(row, obj)
        out.append(obj)
    return out
