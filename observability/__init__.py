"""Metrics, structured logs and traces: how operators watch Runyard.

- `metrics`: the Prometheus metrics the processes observe (prometheus-client, multiprocess
  mode), and `collectors`: the ones computed from the database at scrape time; `views`
  serves both at /metrics.
- `logs`: the run context every log line written during a run carries, and the JSON format.
- `tracing`: OpenTelemetry spans per run segment and step, only when an exporter is set.
- `runs`: the two calls the run executor makes (a segment starts; steps were committed).

Nothing here is imported by the engine, and nothing in here writes to the database.
"""
