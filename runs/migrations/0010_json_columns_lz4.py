"""PostgreSQL: the JSON columns that can grow past a page compress with lz4 instead of pglz.

A value over ~2 KB is compressed when written (TOAST). A run's `state` is written with every
step's commit, so a tenant's big state (an agent's message history) was compressed again each
step. Measured 2026-12-02, pglz then lz4, alternating in one process: a step over 1 MB of text
35.6 → 18.4 ms, over 100 KB 4.7 → 3.0 ms. Values already stored keep pglz (both are read);
SQLite and a server built without lz4 (or older than 14) are left as they are.
"""

from django.db import migrations

COLUMNS = [
    ("runs_graph", "spec"),
    ("runs_thread", "state"),
    ("runs_run", "input"),
    ("runs_run", "state"),
    ("runs_run", "thread_state_before"),
    ("runs_step", "update"),
    ("runs_checkpoint", "state"),
    ("runs_checkpoint", "updates"),
    ("runs_event", "data"),
]


def lz4_available(connection) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
            " WHERE name = 'default_toast_compression'"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def compress_with(method: str):
    def apply(apps, schema_editor) -> None:
        if not lz4_available(schema_editor.connection):
            return
        quote = schema_editor.quote_name
        for table, column in COLUMNS:
            schema_editor.execute(
                f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} SET COMPRESSION {method}"
            )

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0009_run_indexes_written_less"),
    ]

    operations = [
        migrations.RunPython(compress_with("lz4"), compress_with("pglz"), elidable=False),
    ]
