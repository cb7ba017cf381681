"""The websocket origin check: it guards cookie sessions, not key-authenticated clients.

Browsers send cookies with cross-site websocket handshakes and the Same-Origin Policy does not
apply to websockets, so a foreign page could open a stream as the dashboard's logged-in user
(cross-site websocket hijacking). What tells such a page apart is its `Origin` header, which
browsers always send on a websocket handshake and scripts cannot change. Hence, as Django's
CSRF check does for unsafe HTTP requests:

- an `Origin` equal to the handshake's own origin (its `Host`, which must be in
  ALLOWED_HOSTS) or listed in CSRF_TRUSTED_ORIGINS (`https://*.example.com` allowed) passes;
- no `Origin` passes: no browser sent it, so no victim's cookies can ride on it;
- a foreign `Origin` with `Authorization: Bearer` passes without its cookies: a key proves
  itself, and a page in a browser cannot set that header on a websocket;
- a foreign `Origin` otherwise is refused (HTTP 403), whatever ALLOWED_HOSTS says, `*` too.

Channels' AllowedHostsOriginValidator, used before, refused every handshake without `Origin`
(SDKs, CLIs) once ALLOWED_HOSTS was set, and accepted every origin with ALLOWED_HOSTS `*`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


def _header(headers: Iterable[Any], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _allowed_hosts() -> list[str]:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:  # what Django's HttpRequest.get_host() allows then
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def same_origin(origin: str, host: str | None, scheme: str) -> bool:
    """`origin` is the handshake's own site: its `Host` (an allowed host), any scheme but a
    downgrade from wss. Behind a TLS-terminating proxy the scope's scheme is plain ws."""
    if not host:
        return False
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    if parsed.scheme not in ("http", "https") or (scheme == "wss" and parsed.scheme != "https"):
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return False
    return parsed.netloc.lower() == host.lower()


def trusted_origin(origin: str) -> bool:
    """`origin` is in CSRF_TRUSTED_ORIGINS, exactly or as a `scheme://*.domain` pattern."""
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for pattern in trusted:
        if "*" not in pattern:
            continue
        allowed = urlsplit(pattern)
        if allowed.scheme == parsed.scheme and is_same_domain(
            parsed.netloc, allowed.netloc.lstrip("*")
        ):
            return True
    return False


def has_bearer(headers: Iterable[Any]) -> bool:
    value = _header(headers, b"authorization") or ""
    scheme, _, token = value.partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


class SessionOriginValidator:
    """ASGI middleware for websockets: refuses foreign origins that could only use cookies."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = scope.get("headers") or []
        origin = _header(headers, b"origin")
        if origin is None or trusted_origin(origin):
            return await self.application(scope, receive, send)
        if same_origin(origin, _header(headers, b"host"), scope.get("scheme", "ws")):
            return await self.application(scope, receive, send)
        if has_bearer(headers):
            # The key alone: a bad key must not fall back to the browser's session.
            without_cookies = [(k, v) for k, v in headers if k.lower() != b"cookie"]
            return await self.application({**scope, "headers": without_cookies}, receive, send)
        denier = WebsocketDenier()
        return await denier(scope, receive, send)
