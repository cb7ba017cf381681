"""Schedules (crons): graphs started on a cron expression, per tenant, through the run gate."""
