"""config/asgi.py's direct frame write, against autobahn's own encoder on a real protocol.

The protocol is autobahn's Twisted server protocol (what daphne's websocket protocol extends),
handshaken over Twisted's in-memory transport; tests/e2e/test_live__*.py run the same path
through a real daphne.
"""

from __future__ import annotations

import daphne.server  # noqa: F401 - installs the asyncio reactor before Twisted picks one
import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.testing import StringTransport

from config.asgi import DaphneSendFlow

HANDSHAKE = (
    b"GET /ws/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def open_protocol() -> tuple[WebSocketServerProtocol, StringTransport]:
    factory = WebSocketServerFactory("ws://localhost")
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    assert protocol.state == protocol.STATE_OPEN
    transport.clear()
    return protocol, transport


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_a_written_frame_is_byte_for_byte_what_autobahn_sends(length: int) -> None:
    text = ("é" * length)[: length // 2] + "x" * (length - length // 2)
    protocol, transport = open_protocol()
    flow = DaphneSendFlow(protocol)

    assert flow.write_texts([text]) is True
    ours = transport.value()
    transport.clear()
    protocol.sendMessage(text.encode(), isBinary=False)
    assert ours == transport.value()


def test_frames_keep_their_order_with_autobahns_own() -> None:
    protocol, transport = open_protocol()
    flow = DaphneSendFlow(protocol)
    flow.write_texts(["one"])
    protocol.sendMessage(b"two", isBinary=False)
    flow.write_texts(["three"])
    assert transport.value() == b"\x81\x03one\x81\x03two\x81\x05three"


def test_several_frames_go_out_in_one_write_as_autobahn_would_send_them_one_by_one() -> None:
    protocol, transport = open_protocol()
    flow = DaphneSendFlow(protocol)
    texts = ["one", "é" * 100, "x" * 70_000]
    assert flow.write_texts(texts) is True
    ours = transport.value()
    transport.clear()
    for text in texts:
        protocol.sendMessage(text.encode(), isBinary=False)
    assert ours == transport.value()


def test_it_declines_while_the_socket_buffer_is_full() -> None:
    protocol, transport = open_protocol()
    flow = DaphneSendFlow(protocol)
    flow.pauseProducing()  # what Twisted calls once its write buffer passes bufferSize
    assert flow.write_texts(["held"]) is False
    assert transport.value() == b""
    flow.resumeProducing()
    assert flow.write_texts(["now"]) is True


def test_it_declines_once_the_connection_is_closing() -> None:
    protocol, transport = open_protocol()
    flow = DaphneSendFlow(protocol)
    protocol.sendClose(code=1000)
    transport.clear()
    assert flow.write_texts(["late"]) is False
    assert transport.value() == b""


def test_it_declines_when_an_extension_shapes_the_frames() -> None:
    protocol, _ = open_protocol()
    flow = DaphneSendFlow(protocol)
    protocol.websocket_extensions_in_use = ["permessage-deflate"]
    assert flow.write_texts(["compressed elsewhere"]) is False


def frames_in(data: bytes) -> list[str]:
    """Decode server frames with websockets' parser (an implementation independent of ours)."""
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    texts = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
            raise AssertionError("a frame was cut short")
        except StopIteration as done:
            frame = done.value
        assert frame.opcode == Opcode.TEXT and frame.fin
        texts.append(frame.data.decode())
    return texts


def test_over_a_real_socket_frames_go_out_whole_and_in_order_when_the_kernel_is_full() -> None:
    """Sent at once while the socket takes them; once it is full, the rest waits in Twisted's
    buffer (and the producer pauses), and later frames queue behind it instead of jumping."""
    import socket

    from twisted.internet.tcp import Connection
    from twisted.internet.testing import MemoryReactor

    protocol, _ = open_protocol()
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reactor = MemoryReactor()
    connection = Connection(ours, protocol, reactor=reactor)
    connection.connected = True
    protocol.transport = connection
    flow = DaphneSendFlow(protocol)

    assert flow.write_texts(["first"]) is True
    assert peer.recv(100) == b"\x81\x05first"  # on the wire already, nothing left in Twisted
    assert connection._tempDataLen == 0 and connection not in reactor.getWriters()

    texts = [f"{i:04d}" + "x" * 3000 for i in range(200)]
    accepted = []
    for text in texts:  # until the kernel buffer is full and Twisted holds the rest
        assert flow.write_texts([text]) is True
        accepted.append(text)
        if connection._tempDataLen:
            break
    assert connection in reactor.getWriters()
    received = peer.recv(1 << 16)  # the kernel has room again, but Twisted still holds bytes:
    assert flow.write_texts(["late"]) is True  # this frame must queue behind them
    accepted.append("late")
    for text in texts[len(accepted) - 1 :]:  # past Twisted's bufferSize the producer pauses
        if not flow.write_texts([text]):
            break
        accepted.append(text)
    assert flow.paused

    peer.setblocking(False)
    while True:
        try:
            chunk = peer.recv(1 << 16)
        except BlockingIOError:
            if connection not in reactor.getWriters():
                break
            connection.doWrite()  # what the reactor does once the socket is writable
            continue
        received += chunk
    assert frames_in(received) == accepted
    ours.close()
    peer.close()
