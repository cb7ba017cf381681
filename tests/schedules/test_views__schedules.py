"""The dashboard's schedules page: the list with last and next fires and the latest fires'
runs, the create form and its errors, enable/disable and delete; roles and tenants."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from runs.models import Run
from schedules.firing import fire_due_schedules
from schedules.models import Cron
from schedules.services import create_cron
from tenants.models import Tenant
from tests.schedules.conftest import at

pytestmark = pytest.mark.django_db

URL = "/schedules/"


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form(**values: Any) -> dict[str, Any]:
    return {
        "graph": "chain",
        "version": "",
        "schedule": "*/10 * * * *",
        "timezone": "UTC",
        "input": "{}",
        "metadata": "",
        "priority": "3",
        "enabled": "on",
        **values,
    }


def test_nav_links_to_schedules(member: Any, chain: Any) -> None:
    html = login(member).get("/runs/").content.decode()
    assert 'href="/schedules/"' in html


def test_list_shows_schedules_with_last_and_next_fire_and_runs(
    tenant: Tenant, member: Any, chain: Any
) -> None:
    cron = create_cron(
        tenant,
        graph="chain",
        schedule="*/5 * * * *",
        timezone="Europe/Paris",
        now=at("2026-06-01 10:02:00"),
    )
    fire_due_schedules(now=at("2026-06-01 10:05:00"))
    Tenant.objects.filter(pk=tenant.pk).update(max_queued_runs=0)
    fire_due_schedules(now=at("2026-06-01 10:10:00"))
    response = login(member).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    run = Run.objects.get()
    assert f'data-cron="{cron.public_id}"' in html
    assert "*/5 * * * *" in html and "Europe/Paris" in html and "enabled" in html
    assert f"/runs/{run.public_id}/" in html  # the first fire's run is linked
    assert "limit_exceeded.max_queued_runs" in html  # the refused fire is shown
    assert "2026-06-01 10:15 UTC" in html  # next fire
    assert 'aria-current="page">Schedules' in html


def test_create_from_the_form(tenant: Tenant, member: Any, chain: Any) -> None:
    client = login(member)
    assert 'id="cron-form"' in client.get(URL).content.decode()
    response = client.post(URL, form(metadata='{"team": "ops"}', priority="2"))
    assert response.status_code == 302
    cron = Cron.objects.get()
    assert (cron.graph_name, cron.schedule, cron.priority) == ("chain", "*/10 * * * *", 2)
    assert cron.metadata == {"team": "ops"} and cron.next_run_at is not None
    assert cron.created_by == member.username


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ({"schedule": "70 * * * *"}, "is not valid"),
        ({"timezone": "Atlantis/Capital"}, "Unknown timezone"),
        ({"version": "9"}, "version"),
        ({"input": "[1]"}, "Must be a JSON object"),
    ],
)
def test_form_errors_are_shown_next_to_the_field(
    member: Any, chain: Any, values: dict[str, str], shown: str
) -> None:
    response = login(member).post(URL, form(**values))
    assert response.status_code == 200
    html = response.content.decode()
    assert shown in html
    assert not Cron.objects.exists()


def test_enable_disable_and_delete(tenant: Tenant, member: Any, chain: Any) -> None:
    cron = create_cron(tenant, graph="chain", schedule="@daily")
    client = login(member)
    assert client.post(f"{URL}{cron.public_id}/toggle/").status_code == 302
    cron.refresh_from_db()
    assert cron.enabled is False and cron.next_run_at is None
    assert "Enable</button>" in client.get(URL).content.decode()
    client.post(f"{URL}{cron.public_id}/toggle/")
    cron.refresh_from_db()
    assert cron.enabled is True and cron.next_run_at is not None
    assert client.post(f"{URL}{cron.public_id}/delete/").status_code == 302
    assert not Cron.objects.exists()


def test_viewers_see_but_cannot_change(tenant: Tenant, viewer: Any, chain: Any) -> None:
    cron = create_cron(tenant, graph="chain", schedule="@daily")
    client = login(viewer)
    html = client.get(URL).content.decode()
    assert f'data-cron="{cron.public_id}"' in html and 'id="cron-form"' not in html
    assert client.post(URL, form()).status_code == 403
    assert client.post(f"{URL}{cron.public_id}/toggle/").status_code == 403
    assert client.post(f"{URL}{cron.public_id}/delete/").status_code == 403
    assert Cron.objects.get().enabled is True


def test_another_tenants_schedule_is_a_404(
    tenant: Tenant, other_tenant: Tenant, outsider: Any, chain: Any
) -> None:
    cron = create_cron(tenant, graph="chain", schedule="@daily")
    client = login(outsider)
    assert f'data-cron="{cron.public_id}"' not in client.get(URL).content.decode()
    assert client.post(f"{URL}{cron.public_id}/toggle/").status_code == 404
    assert client.post(f"{URL}{cron.public_id}/delete/").status_code == 404
    # The form offers only the caller's own graphs.
    assert client.post(URL, form()).status_code == 200
    assert Cron.objects.count() == 1 and Cron.objects.get().enabled


def test_anonymous_is_sent_to_login() -> None:
    response = Client().get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]
