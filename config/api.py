"""The NinjaAPI at /api/v1: routers of each app, and domain exceptions mapped to HTTP once.

Every error, whichever layer raises it, answers `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import RequestDataTooBig
from django.db import DataError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, URLResolver, re_path
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema
from ninja.operation import Operation
from ninja.parser import Parser
from ninja.renderers import JSONRenderer

from config import openapi
from config.jsonenc import Encoder
from runs.api import router as runs_router
from runs.engine.values import Unstorable, loads_storable
from runs.events import Fenced
from runs.services.errors import ServiceError
from schedules.api import router as schedules_router
from tenants.api import router as tenants_router
from tenants.auth import api_auth, auth_refusal
from tenants.limits import LimitExceeded
from tenants.permissions import Forbidden
from triggers.api import router as triggers_router
from webhooks.api import router as webhooks_router

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "too_many_requests",
}


# A 401's code and message by what was wrong with the credentials (tenants.auth.auth_refusal).
AUTH_REFUSALS = {
    "missing_credentials": (
        "missing_credentials",
        "Authentication required: send `Authorization: Bearer <key>` or log in to the dashboard.",
    ),
    "invalid_key": (
        "invalid_key",
        "The API key was not accepted: it is mistyped, was revoked, or its tenant is "
        "deactivated. Check the key, or ask a tenant admin for a new one "
        "(`manage.py create_api_key <tenant>` on the server).",
    ),
    "wrong_scheme": (
        "missing_credentials",
        "The Authorization header must read `Bearer <key>`; other schemes are not accepted.",
    ),
}


class Renderer(JSONRenderer):
    encoder_class = Encoder


class StrictParser(Parser):
    """Request bodies hold only what the database can store: Python's json accepts NaN,
    Infinity and numbers that overflow to infinity, and every JSON string may carry U+0000,
    none of which PostgreSQL's jsonb (or SQLite's JSON_VALID check) takes. Refused here, for
    every endpoint at once, as a 400 (see `http_error`) instead of a 500 at commit."""

    def parse_body(self, request: HttpRequest) -> Any:
        return loads_storable(request.body)


class RunyardAPI(NinjaAPI):
    """NinjaAPI whose own 404 and 405 answers use the error envelope too."""

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        document = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        openapi.finish(document)
        return document

    def get_openapi_operation_id(self, operation: Operation) -> str:
        # View names are unique across the API and read well in generated clients.
        return operation.view_func.__name__

    def _get_urls(self) -> list[URLResolver | URLPattern]:
        urls = super()._get_urls()
        for pattern in urls:
            if isinstance(pattern, URLPattern):
                pattern.callback = _json_errors(pattern.callback)
        # Last, so it only sees paths no operation matched.
        urls.append(re_path(r"^.*$", csrf_exempt(_json_errors(_unknown_route)), name="unknown"))
        return urls


def _unknown_route(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    raise Http404(request.path)


def _json_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Give the envelope to what ninja answers outside its operations: 405 for a method a
    path lacks, and the 404 of the API's root view."""

    def shape(request: HttpRequest, response: Any) -> Any:
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        allowed = response["Allow"]
        shaped = error_response(
            request,
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here; use {allowed}.",
            {"allowed": [m.strip() for m in allowed.split(",") if m.strip()]},
        )
        shaped["Allow"] = allowed
        return shaped

    def missing(request: HttpRequest) -> HttpResponse:
        return error_response(
            request, 404, "not_found", f"There is no API endpoint at {request.path}."
        )

    if iscoroutinefunction(view):

        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            try:
                return shape(request, await view(request, *args, **kwargs))
            except Http404:
                return missing(request)

        return async_wrapper

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return shape(request, view(request, *args, **kwargs))
        except Http404:
            return missing(request)

    return wrapper


api = RunyardAPI(
    title="Runyard API",
    version="1.0.0",
    description=(
        "Run workflow and agent graphs durably. "
        "Authenticate with `Authorization: Bearer <key>` or the dashboard session (writes "
        "then need the CSRF token in `X-CSRFToken`). Viewers read; members start, cancel "
        "and answer runs; admins manage graphs. Another tenant's objects are 404. "
        'Every error is `{"error": {"code", "message", "details"}}`.'
    ),
    urls_namespace="api",
    auth=api_auth,
    renderer=Renderer(),
    parser=StrictParser(),
)
api.add_router("", runs_router)
api.add_router("", tenants_router)
api.add_router("", schedules_router)
api.add_router("", webhooks_router)
api.add_router("", triggers_router)


def error_response(
    request: HttpRequest,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> HttpResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return api.create_response(request, body, status=status)


@api.exception_handler(ServiceError)
def service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    return error_response(request, exc.status, exc.code, exc.message, exc.details)


@api.exception_handler(Forbidden)
def forbidden(request: HttpRequest, exc: Forbidden) -> HttpResponse:
    return error_response(request, 403, exc.code, exc.message, exc.details)


@api.exception_handler(LimitExceeded)
def limit_exceeded(request: HttpRequest, exc: LimitExceeded) -> HttpResponse:
    details = {"limit": exc.limit, **exc.details}
    if exc.retry_after is not None:
        details["retry_after"] = exc.retry_after
    response = error_response(request, 429, exc.code, exc.message, details)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


# Where ninja found a bad value, in the words of the API's reference: body fields by their own
# name (ninja's `body.<parameter>` prefix names a Python argument, not anything the caller sent).
WHERE_PHRASES = {
    "query": "query parameter `{}`",
    "path": "`{}` in the URL",
    "header": "`{}` header",
    "cookie": "`{}` cookie",
    "form": "form field `{}`",
    "file": "file `{}`",
}
# Pydantic's words for these say nothing about what to do.
PROBLEM_PHRASES = {
    "missing": "required",
    "extra_forbidden": "not a field of this request (check its spelling in /api/v1/docs)",
    # "...or instance of RunIn": the name of a Python class is no help to a caller.
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON array",
}


def problem_of(error: dict[str, Any]) -> dict[str, str]:
    """One of ninja's validation errors as {"where", "in", "message"} a person can act on:
    `where` is the field as the caller wrote it (`input.text`, `nodes[0]`, `limit`)."""
    loc = list(error.get("loc", ()))
    source = str(loc[0]) if loc else "body"
    rest = loc[2:] if source == "body" else loc[1:]
    where = ""
    for part in rest:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = PROBLEM_PHRASES.get(str(error.get("type")), str(error.get("msg", "invalid")))
    return {"where": where or "body", "in": source, "message": message}


def _phrase(problem: dict[str, str]) -> str:
    if problem["in"] == "body":
        where = "the request body" if problem["where"] == "body" else f"`{problem['where']}`"
    else:
        where = WHERE_PHRASES.get(problem["in"], "`{}`").format(problem["where"])
    return f"{where}: {problem['message']}"


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = [problem_of(err) for err in exc.errors]
    summary = "; ".join(_phrase(p) for p in problems[:5])
    return error_response(
        request, 422, "validation_error", f"Invalid request: {summary}.", {"problems": problems}
    )


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    status = exc.status_code
    code, message = HTTP_CODES.get(status, "error"), str(exc)
    details: dict[str, Any] = {}
    if status == 400 and isinstance(exc.__cause__, Unstorable):
        bad = exc.__cause__
        code = "invalid_json_value"
        where = f" at `{bad.path}`" if bad.path else ""
        message = f"The request body holds a value that cannot be stored{where}: {bad.reason}."
        details = {"path": bad.path, "reason": bad.reason}
    elif status == 400 and message.startswith("Cannot parse request body"):
        code, message = "malformed_json", "The request body is not valid JSON."
    elif status == 403 and "CSRF" in message:
        code = "csrf_failed"
    elif isinstance(exc, AuthenticationError):
        code, message = AUTH_REFUSALS[auth_refusal(request) or "missing_credentials"]
    response = error_response(request, status, code, message, details)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="runyard"'
    return response


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", str(exc) or "Not found.")


@api.exception_handler(RequestDataTooBig)
def body_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(request, 413, "payload_too_large", "The request body is too large.")


@api.exception_handler(Fenced)
def fenced(request: HttpRequest, exc: Fenced) -> HttpResponse:
    return error_response(
        request, 409, "conflict", "The run changed while this request ran; read it and retry."
    )


@api.exception_handler(RecursionError)
def too_deep(request: HttpRequest, exc: RecursionError) -> HttpResponse:
    return error_response(request, 400, "bad_request", "The request is nested too deeply.")


@api.exception_handler(DataError)
def data_error(request: HttpRequest, exc: DataError) -> HttpResponse:
    # The database refused a value (too long, out of range) that the schemas let through.
    log.warning("database refused a value: %s", exc)
    return error_response(request, 422, "validation_error", "A value is too long or too large.")


@api.exception_handler(OperationalError)
def database_busy(request: HttpRequest, exc: OperationalError) -> HttpResponse:
    log.warning("database unavailable: %s", exc)
    response = error_response(request, 503, "unavailable", "The database is busy; retry shortly.")
    response["Retry-After"] = "1"
    return response


@api.exception_handler(Exception)
def internal_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(request, 500, "internal_error", "Something went wrong on our side.")
