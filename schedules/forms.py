"""The dashboard's schedule form: shapes what people type; services.create_cron checks it."""

from __future__ import annotations

from typing import Any

from django import forms

from runs.forms import JSON_HELP, JSONObjectField
from schedules.cronexpr import MAX_EXPRESSION_CHARS, MAX_TIMEZONE_CHARS

PRIORITIES = [(str(n), str(n)) for n in range(1, 6)]


class CronForm(forms.Form):
    graph = forms.ChoiceField(label="Graph")
    version = forms.IntegerField(
        label="Version",
        required=False,
        min_value=1,
        max_value=2_147_483_647,
        help_text="Empty: the latest version at each fire.",
    )
    schedule = forms.CharField(
        label="Schedule",
        max_length=MAX_EXPRESSION_CHARS,
        help_text="Cron: minute hour day month weekday, e.g. */15 * * * * or 0 9 * * 1-5; "
        "or @hourly, @daily, @weekly, @monthly.",
        widget=forms.TextInput(attrs={"placeholder": "0 9 * * 1-5", "spellcheck": "false"}),
    )
    timezone = forms.CharField(
        label="Time zone",
        max_length=MAX_TIMEZONE_CHARS,
        initial="UTC",
        help_text="An IANA name such as UTC or Europe/Paris.",
    )
    input = JSONObjectField(
        label="Input",
        help_text=JSON_HELP + " Checked against the graph's input_schema.",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
    )
    metadata = JSONObjectField(
        label="Metadata",
        help_text="Optional; copied to each run with cron_id.",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
    )
    priority = forms.TypedChoiceField(label="Priority", choices=PRIORITIES, coerce=int, initial="3")
    enabled = forms.BooleanField(label="Enabled", required=False, initial=True)

    def __init__(self, *args: Any, graphs: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        graph = self.fields["graph"]
        assert isinstance(graph, forms.ChoiceField)
        graph.choices = [(name, name) for name in graphs]
