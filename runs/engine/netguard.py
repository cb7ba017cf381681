"""Outbound request policy for `http` nodes: host allow-list and private-address refusal.

The host is resolved once, every address it resolves to is checked (one private address among
public ones is enough to refuse: DNS answers can rotate), and the request then connects to the
checked address itself, so a second, different DNS answer (rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .context import HttpPolicy
from .errors import NodeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused(message: str) -> NodeError:
    return NodeError("http_refused", message, fatal=True)


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
    return False


def is_public(address: IPAddress) -> bool:
    """False for private, loopback, link-local, multicast, reserved and unspecified addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (tests replace this to simulate DNS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NodeError("http_error", f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_url(url: str, policy: HttpPolicy) -> tuple[str, int, IPAddress]:
    """Validate `url` against `policy`; returns (host, port, the address to connect to)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise refused(f"only http and https URLs are allowed, got {parts.scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise refused(f"URL {url!r} has no host")
    if parts.username or parts.password:
        raise refused("credentials in URLs are not allowed; use headers")
    if not host_allowed(host, policy.allowed_hosts):
        raise refused(f"host {host!r} is not in the allow-list")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise refused(f"URL {url!r} has an invalid port") from None
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = resolve_host(host, port)
    if not addresses:
        raise NodeError("http_error", f"{host!r} resolved to no address")
    if not policy.allow_private:
        for address in addresses:
            if not is_public(address):
                raise refused(f"host {host!r} resolves to non-public address {address}")
    return host, port, addresses[0]
