"""/metrics answers loopback clients, and others only with the bearer token."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"


def get(remote: str, **headers: str):
    return Client().get("/metrics", REMOTE_ADDR=remote, headers=headers)


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_need_no_token(remote: str) -> None:
    response = get(remote)
    assert response.status_code == 200
    assert b"# TYPE runyard_dispatch_capacity gauge" in response.content


def test_other_clients_are_refused_when_no_token_is_configured(settings) -> None:
    settings.METRICS_TOKEN = ""
    response = get("10.1.2.3", authorization=f"Bearer {TOKEN}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_other_clients_need_the_right_bearer_token(settings) -> None:
    settings.METRICS_TOKEN = TOKEN
    missing = get("10.1.2.3")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert get("10.1.2.3", authorization="Bearer wrong").status_code == 401
    assert get("10.1.2.3", authorization=f"Basic {TOKEN}").status_code == 401
    ok = get("203.0.113.9", authorization=f"Bearer {TOKEN}")
    assert ok.status_code == 200
    assert b"# TYPE runyard_dispatch_capacity gauge" in ok.content


def test_a_request_forwarded_by_a_local_proxy_is_not_loopback(settings) -> None:
    settings.METRICS_TOKEN = TOKEN
    response = get("127.0.0.1", x_forwarded_for="198.51.100.7")
    assert response.status_code == 401
    assert get("127.0.0.1", forwarded="for=198.51.100.7").status_code == 401
    with_token = get("127.0.0.1", x_forwarded_for="1.2.3.4", authorization=f"Bearer {TOKEN}")
    assert with_token.status_code == 200


def test_only_get_is_served() -> None:
    assert Client().post("/metrics").status_code == 405
