"""`/ok` and `/info`, as LangGraph's clients call them."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

router = Router(tags=["meta"])

SDK_TARGET = "0.4.14"


@router.get("/ok", auth=None)
def ok(request: HttpRequest) -> Any:
    return {"ok": True}


@router.get("/info", auth=None)
def info(request: HttpRequest) -> Any:
    return {
        "version": "runyard-lg/0.1",
        "langgraph_sdk_target": SDK_TARGET,
        "flags": {
            "assistants": True,
            "crons": True,
            "store": True,
            "langsmith": False,
            "strict_resume": True,
        },
        "host": {"kind": "runyard", "project_id": None, "revision_id": None},
    }
