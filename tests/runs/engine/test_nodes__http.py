from __future__ import annotations

import ipaddress
import json
import time

import pytest

from runs.engine import HttpPolicy, NodeError, RunContext, netguard
from runs.engine.netguard import check_url, host_allowed, is_public

from .helpers import LocalServer, chain, run_all, send, slow


def local(**extra: object) -> RunContext:
    policy = {"allowed_hosts": ["127.0.0.1"], "allow_private": True, **extra}
    return RunContext(http_policy=HttpPolicy(**policy))  # type: ignore[arg-type]


def http(url: str, **extra: object) -> dict:
    return {"kind": "http", "url": url, "output": "resp", **extra}


def test_get_json(server: LocalServer) -> None:
    server.json_route("/items/7", {"id": 7, "name": "lamp"})
    spec = chain(
        ("get", http(server.url + "/items/{{ state.id }}", headers={"X-Trace": "run-{{ run.id }}"}))
    )
    ctx = local()
    ctx.metadata = {"id": "abc"}
    resp = run_all(spec, {"id": 7}, ctx)[-1].state["resp"]
    assert resp["status"] == 200
    assert resp["body"] == {"id": 7, "name": "lamp"}
    assert resp["headers"]["content-type"] == "application/json"
    assert server.requests[0]["headers"]["X-Trace"] == "run-abc"
    assert server.requests[0]["headers"]["Host"] == server.url.removeprefix("http://")


def test_post_json_body_and_text_response(server: LocalServer) -> None:
    server.route("/echo", lambda h: send(h, 201, b"created", "text/plain"))
    spec = chain(
        (
            "post",
            http(server.url + "/echo", method="POST", json="{'name': state.name, 'tags': [1, 2]}"),
        )
    )
    resp = run_all(spec, {"name": "x"}, local())[-1].state["resp"]
    assert resp == {"status": 201, "headers": resp["headers"], "body": "created"}
    assert json.loads(server.requests[0]["body"]) == {"name": "x", "tags": [1, 2]}
    assert server.requests[0]["method"] == "POST"


def test_private_and_loopback_addresses_are_refused_unless_allowed(server: LocalServer) -> None:
    server.json_route("/x", {})
    spec = chain(("get", http(server.url + "/x")))
    last = run_all(spec, ctx=local(allow_private=False))[-1]
    assert last.error["code"] == "http_refused"
    assert "non-public address 127.0.0.1" in last.error["message"]
    assert last.run_error["fatal"] is True


def test_localhost_by_name_is_refused_after_resolving_it(server: LocalServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    spec = chain(("get", http(f"http://localhost:{port}/x")))
    ctx = RunContext(http_policy=HttpPolicy(allowed_hosts=["localhost"]))
    assert "non-public" in run_all(spec, ctx=ctx)[-1].error["message"]


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.8")]
    monkeypatch.setattr(netguard, "resolve_host", lambda host, port: answers)
    with pytest.raises(NodeError) as info:
        check_url("https://api.example.com/v1", HttpPolicy(allowed_hosts=["*.example.com"]))
    assert "10.0.0.8" in info.value.message
    answers.pop()
    host, port, address = check_url(
        "https://api.example.com/v1", HttpPolicy(allowed_hosts=["*.example.com"])
    )
    assert (host, port, str(address)) == ("api.example.com", 443, "93.184.216.34")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "100.64.0.1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_addresses() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))


def test_host_allow_list() -> None:
    assert host_allowed("api.example.com", ["*.example.com"])
    assert not host_allowed("example.com", ["*.example.com"])
    assert not host_allowed("evil-example.com", ["*.example.com"])
    assert host_allowed("Example.COM", ["example.com"])
    assert host_allowed("anything.io", ["*"])
    assert not host_allowed("anything.io", [])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/x", "only http and https"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://other.com/", "allow-list"),
    ],
)
def test_refused_urls(url: str, message: str) -> None:
    with pytest.raises(NodeError) as info:
        check_url(url, HttpPolicy(allowed_hosts=["example.com"]))
    assert message in info.value.message and info.value.fatal


def test_host_not_in_allow_list_fails_the_node(server: LocalServer) -> None:
    spec = chain(("get", http(server.url + "/x")))
    ctx = RunContext(http_policy=HttpPolicy(allowed_hosts=["api.example.com"], allow_private=True))
    assert "allow-list" in run_all(spec, ctx=ctx)[-1].error["message"]


def test_response_size_limit(server: LocalServer) -> None:
    server.route("/big", lambda h: send(h, 200, b"x" * 5000, "text/plain"))

    def chunked(h: object) -> None:
        h.send_response(200)  # type: ignore[attr-defined]
        h.send_header("Content-Type", "text/plain")  # type: ignore[attr-defined]
        h.end_headers()  # type: ignore[attr-defined]
        h.wfile.write(b"y" * 5000)  # type: ignore[attr-defined]

    server.route("/undeclared", chunked)
    for path in ("/big", "/undeclared"):
        spec = chain(("get", http(server.url + path, max_bytes=1000)))
        assert run_all(spec, ctx=local())[-1].error["code"] == "http_too_large"
    spec = chain(("get", http(server.url + "/big")))
    assert run_all(spec, ctx=local(max_bytes=100))[-1].error["code"] == "http_too_large"


def test_time_limit(server: LocalServer) -> None:
    server.route("/slow", slow(3))
    spec = chain(("get", http(server.url + "/slow", timeout=0.3)))
    started = time.monotonic()
    last = run_all(spec, ctx=local())[-1]
    assert time.monotonic() - started < 2
    assert last.error["code"] in ("http_timeout", "timeout")


def test_status_errors(server: LocalServer) -> None:
    server.json_route("/down", {"error": "down"}, status=503)
    server.json_route("/missing", {"error": "nope"}, status=404)
    down = run_all(
        chain(("get", http(server.url + "/down", retry={"max_attempts": 2}))), ctx=local()
    )[-1]
    assert down.error["code"] == "http_status" and down.attempt == 2
    missing = run_all(
        chain(("get", http(server.url + "/missing", retry={"max_attempts": 2}))), ctx=local()
    )[-1]
    assert missing.attempt == 1
    kept = run_all(
        chain(("get", http(server.url + "/missing", raise_for_status=False))), ctx=local()
    )[-1]
    assert kept.state["resp"]["status"] == 404 and kept.done


def test_redirects_are_not_followed(server: LocalServer) -> None:
    def redirect(h: object) -> None:
        h.send_response(302)  # type: ignore[attr-defined]
        h.send_header("Location", "http://169.254.169.254/")  # type: ignore[attr-defined]
        h.send_header("Content-Length", "0")  # type: ignore[attr-defined]
        h.end_headers()  # type: ignore[attr-defined]

    server.route("/r", redirect)
    resp = run_all(chain(("get", http(server.url + "/r"))), ctx=local())[-1].state["resp"]
    assert resp["status"] == 302
