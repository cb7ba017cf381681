"""The schedules page in a real browser against live daphne + qcluster + scheduler: the real
scheduler fires a due schedule and its run is linked from the page; a schedule is created from
the form (and a bad expression shown next to its field), disabled and deleted. Fails on any
failed same-origin request or JavaScript error. Screenshots at 1280 and 390 px."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest
from django.utils import timezone

from runs.models import Run
from runs.services import create_graph_version
from schedules.models import Cron
from schedules.services import create_cron
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    PASSWORD,
    _fast_password_hashing,
    require_browser,
)
from tests.e2e.test_lists_browser import shoot, watched  # noqa: F401 - fixture
from tests.factories import make_tenant, make_user
from tests.runs.conftest import chain_spec

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()


def test_schedules_fire_and_are_managed_from_the_page(
    live_platform: Any,
    watched: Any,  # noqa: F811 - the fixture imported above
) -> None:
    page, problems = watched
    tenant = make_tenant("crons-co")
    user = make_user("crons@example.com", tenant=tenant, password=PASSWORD)
    create_graph_version(tenant, chain_spec())
    # Its first tick is long past: the running scheduler fires it at once, and only once.
    due = create_cron(
        tenant, graph="chain", schedule="*/5 * * * *", now=timezone.now() - dt.timedelta(hours=1)
    )
    base = live_platform.url

    page.goto(f"{base}/login/?next=/runs/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base}/runs/")
    page.click('nav a[href="/schedules/"]')
    page.wait_for_url(f"{base}/schedules/")

    row = f'tr[data-cron="{due.public_id}"]'
    fired_run = f"{row} [data-role=fires] a.badge.s-succeeded"
    deadline = time.monotonic() + 60
    while page.locator(fired_run).count() == 0:
        if time.monotonic() > deadline:
            due.refresh_from_db()
            log = live_platform.log("scheduler")[-3000:]
            raise AssertionError(f"no succeeded fire: {due.__dict__}; scheduler log: {log}")
        time.sleep(0.5)
        page.reload()
    run = Run.objects.get(tenant=tenant)
    assert run.metadata["cron_id"] == str(due.public_id)
    assert page.locator(f"{row} [data-role=next-fire]").inner_text().startswith("in ")
    shoot(page, "schedules")
    page.click(fired_run)
    page.wait_for_url(f"{base}/runs/{run.public_id}/")

    # Create one from the form; a bad expression first, shown next to its field.
    page.goto(f"{base}/schedules/")
    page.click("#new-schedule-link")
    page.fill("#id_schedule", "75 * * * *")
    page.fill("#id_timezone", "Europe/Paris")
    page.click("#cron-form button[type=submit]")
    page.wait_for_selector(".field.has-error #id_schedule")
    assert "is not valid" in page.locator("#cron-form").inner_text()
    page.fill("#id_schedule", "0 9 * * 1-5")
    page.click("#cron-form button[type=submit]")
    page.wait_for_url(f"{base}/schedules/")
    created = Cron.objects.exclude(pk=due.pk).get(tenant=tenant)
    assert (created.schedule, created.timezone) == ("0 9 * * 1-5", "Europe/Paris")
    new_row = f'tr[data-cron="{created.public_id}"]'
    assert "Europe/Paris" in page.locator(new_row).inner_text()

    # Disable it, then delete it (after the confirmation).
    page.click(f"{new_row} [data-role=toggle]")
    page.wait_for_selector(f'{new_row}[data-enabled="0"]')
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{new_row} [data-role=delete]")
    page.wait_for_selector(new_row, state="detached")
    assert re.search(r"Deleted schedule", page.content())
    assert list(Cron.objects.filter(tenant=tenant)) == [due]
    due.refresh_from_db()
    assert due.fire_count == 1
    assert problems == [], problems
