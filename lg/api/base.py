"""The NinjaAPI at /lg: the LangGraph Agent Protocol on Runyard's tenants, keys and roles.

`langgraph-sdk` sends the key as `x-api-key` (a Bearer key works too). Errors answer
`{"detail": "..."}`, as LangGraph's server does, with the status the SDK maps to its typed
errors (404 NotFoundError, 409 ConflictError, 422 UnprocessableEntityError, ...).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DataError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyHeader

from config.api import Renderer, StrictParser, problem_of
from lg.errors import Refused
from runs.engine.values import Unstorable
from runs.events import Fenced
from runs.services.errors import ServiceError
from tenants.auth import ApiKeyAuth, TenantContext, context_for_key
from tenants.limits import LimitExceeded
from tenants.permissions import Forbidden

log = logging.getLogger(__name__)


class XApiKey(APIKeyHeader):
    """`x-api-key: ry_<prefix>_<secret>`, the header langgraph-sdk sends."""

    param_name = "x-api-key"

    def authenticate(self, request: HttpRequest, key: str | None) -> TenantContext | None:
        if not key:
            return None
        return context_for_key(key.strip())


class LgAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Any) -> str:
        return "lg_" + operation.view_func.__name__


api = LgAPI(
    title="Runyard: LangGraph Agent Protocol",
    version="0.1.0",
    description=(
        "The Agent Protocol that `langgraph-sdk` speaks, on Runyard's tenants: assistants "
        "are graph versions (or named configurations over a graph), threads and runs are "
        "Runyard's, interrupts are approval and input nodes. Authenticate with "
        '`x-api-key: <key>`. Errors are `{"detail": "..."}`.'
    ),
    urls_namespace="lg",
    auth=[XApiKey(), ApiKeyAuth()],
    renderer=Renderer(),
    parser=StrictParser(),
    docs_url="/docs",
)


def detail(request: HttpRequest, status: int, message: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": message, **extra}, status=status)


@api.exception_handler(Refused)
def refused(request: HttpRequest, exc: Refused) -> HttpResponse:
    return detail(request, exc.status, exc.detail)


@api.exception_handler(ServiceError)
def service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    return detail(request, exc.status, exc.message, code=exc.code)


@api.exception_handler(Forbidden)
def forbidden(request: HttpRequest, exc: Forbidden) -> HttpResponse:
    return detail(request, 403, exc.message, code=exc.code)


@api.exception_handler(LimitExceeded)
def limit_exceeded(request: HttpRequest, exc: LimitExceeded) -> HttpResponse:
    response = detail(request, 429, exc.message, code=exc.code)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = [problem_of(err) for err in exc.errors]
    summary = "; ".join(f"{p['where']}: {p['message']}" for p in problems[:5])
    return detail(request, 422, f"Invalid request: {summary}.", problems=problems)


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    status, message = exc.status_code, str(exc)
    if status == 400 and isinstance(exc.__cause__, Unstorable):
        message = f"The request body holds a value that cannot be stored: {exc.__cause__.reason}."
    elif status == 400 and message.startswith("Cannot parse request body"):
        message = "The request body is not valid JSON."
    elif isinstance(exc, AuthenticationError):
        message = (
            "Authentication required: send the API key as `x-api-key` (a key that is "
            "revoked, mistyped or of a deactivated tenant is refused)."
        )
    return detail(request, status, message)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return detail(request, 404, str(exc) or "Not found.")


@api.exception_handler(RequestDataTooBig)
def body_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return detail(request, 413, "The request body is too large.")


@api.exception_handler(Fenced)
def fenced(request: HttpRequest, exc: Fenced) -> HttpResponse:
    return detail(request, 409, "The run changed while this request ran; read it and retry.")


@api.exception_handler(RecursionError)
def too_deep(request: HttpRequest, exc: RecursionError) -> HttpResponse:
    return detail(request, 400, "The request is nested too deeply.")


@api.exception_handler(DataError)
def data_error(request: HttpRequest, exc: DataError) -> HttpResponse:
    log.warning("database refused a value: %s", exc)
    return detail(request, 422, "A value is too long or too large.")


@api.exception_handler(OperationalError)
def database_busy(request: HttpRequest, exc: OperationalError) -> HttpResponse:
    log.warning("database unavailable: %s", exc)
    response = detail(request, 503, "The database is busy; retry shortly.")
    response["Retry-After"] = "1"
    return response


@api.exception_handler(Exception)
def internal_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return detail(request, 500, "Something went wrong on our side.")
