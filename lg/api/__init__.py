"""The /lg API: its routers on one NinjaAPI (lg/api/base.py)."""

from lg.api import assistants, meta, runs, store, threads
from lg.api.base import api

api.add_router("", meta.router)
api.add_router("", assistants.router)
api.add_router("", threads.router)
api.add_router("", runs.router)
api.add_router("", store.router)

__all__ = ["api"]
