from __future__ import annotations

import json
import re

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from runs.models import Graph
from tenants.auth import context_for_key
from tenants.models import ApiKey, Tenant


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_prints_credentials_once(capsys) -> None:
    call_command("seed_demo")
    first = capsys.readouterr().out
    password = re.search(r"login\s+demo@example.com / (\S+)", first).group(1)
    key = re.search(r"API key\s+(\S+)", first).group(1)
    assert context_for_key(key).tenant.slug == "demo"
    graphs = Graph.objects.filter(tenant__slug="demo").count()
    assert graphs >= 3
    call_command("seed_demo")
    second = capsys.readouterr().out
    assert key not in second and password not in second
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert ApiKey.objects.filter(tenant__slug="demo").count() == 1
    assert (
        Graph.objects.filter(tenant__slug="demo").count() == graphs
    )  # same specs, no new versions
    client = Client()
    assert client.login(username="demo@example.com", password=password)
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_seed_demo_prints_paste_ready_lines_with_the_real_port(capsys, monkeypatch) -> None:
    monkeypatch.setenv("PORT", "18123")
    monkeypatch.delenv("RUNYARD_BIND", raising=False)
    call_command("seed_demo")
    first = capsys.readouterr().out
    key = re.search(r"^  export KEY=(ry_\S+)$", first, re.M).group(1)
    assert context_for_key(key).tenant.slug == "demo"
    assert "  export BASE=http://127.0.0.1:18123\n" in first
    assert "  dashboard http://127.0.0.1:18123/\n" in first
    assert '-H "Authorization: Bearer $KEY" $BASE/api/v1/graphs' in first
    assert "8000" not in first
    # Later runs cannot show the key again: they print the line that makes a new one.
    call_command("seed_demo")
    second = capsys.readouterr().out
    assert "  export KEY=$(.venv/bin/python manage.py seed_demo --new-key)\n" in second
    assert "seed_demo --reset-password" in second


@pytest.mark.django_db
def test_new_key_prints_only_a_working_key(capsys) -> None:
    call_command("seed_demo")
    capsys.readouterr()
    call_command("seed_demo", "--new-key")
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"ry_\S+", out)
    assert context_for_key(out).tenant.slug == "demo"


@pytest.mark.django_db
def test_reset_password_gives_the_demo_login_a_new_password(capsys) -> None:
    call_command("seed_demo")
    old = re.search(r"login\s+demo@example.com / (\S+)", capsys.readouterr().out).group(1)
    call_command("seed_demo", "--reset-password")
    new = re.search(r"login\s+demo@example.com / (\S+)", capsys.readouterr().out).group(1)
    assert new != old
    assert not Client().login(username="demo@example.com", password=old)
    assert Client().login(username="demo@example.com", password=new)


@pytest.mark.django_db
def test_reset_password_before_seeding_says_what_to_do() -> None:
    with pytest.raises(CommandError, match="make run"):
        call_command("seed_demo", "--reset-password")


def _final_state(capsys, path: str, data: dict) -> dict:
    call_command(
        "run_graph",
        f"examples/graphs/{path}",
        "--input",
        json.dumps(data),
        "--json",
        "--auto-approve",
    )
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Our site is down for every user!", "urgent"),
        ("My invoice charged me twice", "billing"),
        ("How do I invite a colleague?", "question"),
        ("Thanks for the lovely product", "general"),
    ],
)
def test_support_triage_classifies_by_the_text(capsys, text: str, label: str) -> None:
    state = _final_state(capsys, "support-triage.json", {"text": text})
    assert state["classification"]["label"] == label
    assert state["urgent"] is (label == "urgent")
    assert ("page" in state) is (label == "urgent")  # only urgent tickets page on-call


def test_support_triage_answers_differ_by_label(capsys) -> None:
    billing = _final_state(capsys, "support-triage.json", {"text": "refund please"})["answer"]
    general = _final_state(capsys, "support-triage.json", {"text": "hello there"})["answer"]
    assert billing != general and "billing" in billing


def test_research_fanout_plans_around_the_question(capsys) -> None:
    state = _final_state(capsys, "research-fanout.json", {"question": 'Why "durable" runs?'})
    assert all('Why "durable" runs?' in q for q in state["subquestions"])
    assert 'Why "durable" runs?' in state["report"]
