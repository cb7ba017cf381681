"""The runs app's API router: graphs, threads, runs, live views and artifacts."""

from __future__ import annotations

from ninja import Router

from runs.api import graphs, live, runs, threads

router = Router()
router.add_router("", graphs.router)
router.add_router("", threads.router)
router.add_router("", runs.router)
router.add_router("", live.router)
router.add_router("", runs.artifacts_router)

__all__ = ["router"]
