"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets pass the origin check first (browsers send cookies with cross-site handshakes; it
guards cookie sessions only, see config/ws_origin.py), then channels' cookie/session/auth
middleware, which puts the dashboard's user in the scope; the consumers authenticate in
`connect()` (session user or `Authorization: Bearer`).

Daphne gives an application no backpressure: its `send` never waits, and a client that does
not read makes Twisted buffer without bound. `DaphneSendFlow` plugs into Twisted's flow control
of the connection, so a consumer sees when the socket's buffer is full and keeps frames in its
own bounded outbox instead (runs/consumers/). Under another server the scope key is absent
and consumers rely on `send` itself waiting.
"""

import asyncio
import contextlib
import functools
import gc
import logging
import os
import struct
from collections.abc import Sequence
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from twisted.internet.interfaces import IPushProducer  # noqa: E402
from zope.interface import implementer  # noqa: E402

from config.ws_origin import SessionOriginValidator  # noqa: E402
from runs.consumers import FLOW_SCOPE_KEY  # noqa: E402
from runs.routing import websocket_urlpatterns  # noqa: E402

log = logging.getLogger(__name__)


@implementer(IPushProducer)
class DaphneSendFlow:
    """Whether a daphne websocket's socket buffer is full.

    Twisted pauses a transport's streaming producer once more than `bufferSize` (64 KiB) waits
    in user space, and resumes it when that buffer has drained. Daphne's HTTP channel, which
    upgraded the connection, is registered as that producer (it stops reading from a client
    that does not read); this takes its place and passes every call on to it. Under daphne
    Twisted runs on the asyncio loop's thread (asyncio reactor), so no locking is needed.
    """

    # A client that is behind needs time to read up to a close frame (and its 4008 code);
    # autobahn's default closing handshake gives it one second before dropping the socket.
    close_grace_seconds = 10.0

    def __init__(self, protocol: Any) -> None:
        transport = protocol.transport
        self._protocol = protocol
        self._stopped = False
        self._writable = asyncio.Event()
        self._previous = getattr(transport, "producer", None)
        if self._previous is not None and not getattr(transport, "streamingProducer", True):
            raise RuntimeError("a pull producer is registered on this transport")
        if self._previous is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)
        if not getattr(transport, "producerPaused", False):
            self._writable.set()
        if getattr(protocol, "closeHandshakeTimeout", 0) < self.close_grace_seconds:
            protocol.closeHandshakeTimeout = self.close_grace_seconds

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self._writable.clear()
        if self._previous is not None:
            self._previous.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self._writable.set()
        if self._previous is not None:
            self._previous.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self._stopped = True
        self._writable.set()
        if self._previous is not None:
            self._previous.stopProducing()

    @property
    def paused(self) -> bool:
        return not self._writable.is_set()

    @property
    def closed(self) -> bool:
        return self._stopped or self._protocol.state == self._protocol.STATE_CLOSED

    async def wait_writable(self) -> None:
        # autobahn unregisters the producer when it drops a connection, so a closed socket may
        # never resume us: look at its state now and then.
        while self.paused and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writable.wait(), timeout=1.0)

    def write_texts(self, texts: Sequence[str]) -> bool:
        """Write text frames straight to the socket, or say no (False: use `send`).

        These are the frames autobahn would build for daphne's `websocket.send`, minus the
        layers around it (channels' session wrapper, daphne's reply routing, autobahn's
        per-frame debug-log formatting) and, when Twisted holds nothing unsent for this socket,
        minus Twisted's buffering: the frames go out in one `send()` now instead of
        registering the socket for writability (two epoll changes and another loop pass per
        frame). With ten viewers per run that was over half of daphne's CPU per frame
        (bench/events.py); one `send()` for a transaction's several events also wakes the
        client once instead of once per event. Only on an open connection with no extension
        (daphne negotiates none) and nothing queued inside autobahn, so frames stay whole and
        in order.
        """
        protocol = self._protocol
        if (
            self._stopped
            or not self._writable.is_set()
            or protocol.state != protocol.STATE_OPEN
            or getattr(protocol, "websocket_extensions_in_use", None)
            or getattr(protocol, "send_queue", None)
        ):
            return False
        data = b"".join(text_frame(text) for text in texts)
        transport = protocol.transport
        if _nothing_buffered(transport):
            try:
                sent = transport.getHandle().send(data)
            except OSError:  # EAGAIN, or a dead peer: Twisted meets it on its own write
                sent = 0
            if sent == len(data):
                return True
            data = data[sent:]
        transport.write(data)  # the rest waits in Twisted's buffer, in order
        return True


def _nothing_buffered(transport: Any) -> bool:
    """A plain TCP transport of Twisted's with no bytes of its own waiting to be sent."""
    return (
        getattr(transport, "TLS", True) is False
        and getattr(transport, "connected", False)
        and not getattr(transport, "disconnecting", True)
        and getattr(transport, "_tempDataLen", 1) == 0
        and len(getattr(transport, "dataBuffer", b"x")) == getattr(transport, "offset", -1)
    )


def text_frame(text: str) -> bytes:
    payload = text.encode()
    return text_frame_header(len(payload)) + payload


def text_frame_header(length: int) -> bytes:
    """RFC 6455 §5.2 for a server's unfragmented, unmasked text frame of `length` bytes."""
    if length < 126:
        return struct.pack("!BB", 0x81, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def _daphne_protocol(send: Any) -> Any:
    # daphne passes `functools.partial(server.handle_reply, protocol)` as `send`.
    if isinstance(send, functools.partial) and send.args:
        protocol = send.args[0]
        if hasattr(protocol, "registerProducer") and getattr(protocol, "transport", None):
            return protocol
    return None


def with_send_flow(app: Any) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol = _daphne_protocol(send)
        if protocol is not None:
            try:
                scope = {**scope, FLOW_SCOPE_KEY: DaphneSendFlow(protocol)}
            except Exception:  # noqa: BLE001 - no flow control is a degraded, working mode
                log.warning("no send flow control for %r", protocol, exc_info=True)
        await app(scope, receive, send)

    return asgi


def websocket_app() -> Any:
    """The websocket stack: flow control, origin check, session and user, then the routes."""
    return with_send_flow(
        SessionOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
    )


application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_app()})

# What is loaded by now (Django, the app registry, URLconfs: some 150,000 objects) lives as
# long as the process. Frozen, it is left out of every full garbage collection, which with
# 1,000 websockets open otherwise paused daphne for 70-160 ms at a time (bench/events.py).
gc.freeze()
