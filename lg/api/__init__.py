"""The /lg API: its routers on one NinjaAPI (lg/api/base.py)."""

from lg.api import assistants, crons, meta, runs, store, threads
from lg.api.base import api

api.add_router("", meta.router)
api.add_router("", assistants.router)
api.add_router("", threads.router)
# Crons before runs: `/threads/{id}/runs/crons` would match `/threads/{id}/runs/{run_id}`.
api.add_router("", crons.router)
api.add_router("", runs.router)
api.add_router("", store.router)

__all__ = ["api"]
