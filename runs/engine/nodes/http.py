"""`http`: one HTTP request under the run's HttpPolicy; the response goes to `output`.

Fields: method (default GET), url (template), headers ({name: template}), json (expression:
request body) or body (template: raw text body), output, max_bytes?, timeout?, raise_for_status?
(default true: a 5xx/429 answer is a retryable error, another 4xx a plain failure; false
writes every answer to `output`). Output is {"status", "headers", "body"}, body JSON-decoded
when the response is JSON, else text. Redirects are not followed (a redirect could lead to a
refused address); the 3xx answer is returned as is.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from .. import fields as f
from ..errors import NodeError, RunCancelled
from ..fields import Field, Table
from ..netguard import check_url
from ..threads import call_with_cancel
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@register_kind
class HttpNode(NodeKind):
    kind = "http"
    field_table = Table(
        (
            Field("method", f.enum_ignoring_case(*METHODS), doc="Default GET."),
            Field("url", f.template(), required=True, doc="Checked against the allow-list."),
            Field("headers", f.mapping(f.template()), doc="Header name → template."),
            Field("json", f.expression(), doc="The request body, as JSON."),
            Field("body", f.nullable(f.template()), doc="The request body, as text."),
            Field("output", f.state_key(), required=True, doc="Receives {status, headers, body}."),
            Field("max_bytes", f.integer(minimum=1), doc="Response size limit."),
            Field("raise_for_status", f.boolean(), doc="Default true: 4xx/5xx fail the node."),
        ),
        rules=f.not_both("json", "body"),
    )

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        if str(node.get("method", "GET")).upper() not in METHODS:
            check.add(where, f"`method` must be one of {', '.join(METHODS)}")
        check.template(where, node.get("url"), "`url`")
        headers = node.get("headers", {})
        if not isinstance(headers, dict):
            check.add(where, "`headers` must map header names to templates")
        else:
            for header, value in headers.items():
                check.template(where, value, f"headers.{header}")
        if "json" in node and "body" in node:
            check.add(where, "use either `json` (expression) or `body` (template), not both")
        if "json" in node:
            check.expression(where, node["json"], "`json`")
        check.template(where, node.get("body"), "`body`", required=False)
        check.key(where, node, "output")
        check.number(where, node, "max_bytes", minimum=1, integer=True)
        if not isinstance(node.get("raise_for_status", True), bool):
            check.add(where, "`raise_for_status` must be true or false")

    def run(self, nc: NodeContext) -> Outcome:
        node = nc.node
        policy = nc.run.http_policy
        url = nc.render(node["url"]).strip()
        host, port, address = check_url(url, policy)
        max_bytes = min(int(node.get("max_bytes", policy.max_bytes)), policy.max_bytes)
        timeout = min(float(node.get("timeout", policy.timeout)), policy.timeout)
        headers = {k: nc.render(v) for k, v in (node.get("headers") or {}).items()}
        request_kwargs: dict[str, Any] = {"headers": headers}
        if "json" in node:
            request_kwargs["json"] = nc.evaluate(node["json"])
        elif "body" in node:
            request_kwargs["content"] = nc.render(node["body"]).encode("utf-8")
        pinned, extensions = _pin(url, host, port, address)
        request_kwargs["headers"].setdefault("Host", _host_header(url, host, port))
        client = httpx.Client(timeout=timeout, follow_redirects=False)

        def call() -> dict:
            try:
                with client.stream(
                    node.get("method", "GET").upper(),
                    pinned,
                    extensions=extensions,
                    **request_kwargs,
                ) as response:
                    return _read(response, max_bytes)
            except httpx.TimeoutException:
                raise NodeError("http_timeout", f"{url} did not answer within {timeout}s") from None
            except httpx.HTTPError as exc:
                if nc.cancel.cancelled:
                    raise RunCancelled(nc.cancel.reason or "cancelled") from None
                raise NodeError("http_error", f"request to {url} failed: {exc}") from None
            finally:
                client.close()

        try:
            result = call_with_cancel(call, nc.cancel, timeout + 1.0, on_abandon=client.close)
        except TimeoutError:
            raise NodeError("http_timeout", f"{url} did not answer within {timeout}s") from None
        status = result["status"]
        if node.get("raise_for_status", True) and status >= 400:
            detail = str(result["body"])[:200]
            raise NodeError(
                "http_status",
                f"{url} answered {status}: {detail}",
                retryable=status >= 500 or status == 429,
            )
        return Outcome({node["output"]: result})


def _host_header(url: str, host: str, port: int) -> str:
    default = 443 if url.lower().startswith("https:") else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


def _pin(url: str, host: str, port: int, address: Any) -> tuple[httpx.URL, dict]:
    """Point the request at the checked address; TLS still verifies the original host name."""
    original = httpx.URL(url)
    pinned = original.copy_with(host=str(address), port=port)
    extensions = {"sni_hostname": host} if original.scheme == "https" else {}
    return pinned, extensions


def _read(response: httpx.Response, max_bytes: int) -> dict:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise NodeError(
            "http_too_large",
            f"response is {declared} bytes; the limit is {max_bytes}",
            retryable=False,
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise NodeError(
                "http_too_large", f"response exceeds the {max_bytes} byte limit", retryable=False
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    content_type = response.headers.get("content-type", "")
    body: Any
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    if "json" in content_type:
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError:
            body = text
    else:
        body = text
    return {"status": response.status_code, "headers": dict(response.headers), "body": body}
