"""Dashboard forms: parse and check what people type; the services decide the rest."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from runs.engine import SpecError, load_text
from runs.engine.values import loads_storable

JSON_HELP = 'A JSON object, e.g. {"text": "hello"}.'


class JSONObjectField(forms.CharField):
    """A textarea holding a JSON object; empty means `empty_value` ({} or None)."""

    widget = forms.Textarea

    def __init__(self, *, empty_object: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(strip=True, **kwargs)
        self.empty_object = empty_object

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if not text:
            return {} if self.empty_object else None
        limit = settings.RUNYARD["MAX_INPUT_BYTES"]
        if len(text.encode()) > limit:
            raise forms.ValidationError(f"Too large: at most {limit} bytes.")
        try:
            data = loads_storable(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}.") from exc
        if not isinstance(data, dict):
            raise forms.ValidationError(
                f"Must be a JSON object ({{...}}), not {type(data).__name__}."
            )
        return data


class StartRunForm(forms.Form):
    version = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    input = JSONObjectField(
        label="Input",
        help_text=JSON_HELP + " Checked against the graph's input_schema.",
        widget=forms.Textarea(attrs={"rows": 7, "spellcheck": "false"}),
    )
    metadata = JSONObjectField(
        label="Metadata",
        help_text="Optional JSON object stored with the run.",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
    )
    priority = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=3,  # type: ignore[arg-type]  # django-stubs: str | None; any value works
        initial=3,
        choices=[(5, "5 (first)"), (4, "4"), (3, "3 (default)"), (2, "2"), (1, "1 (last)")],
        help_text="Your queued runs start by priority, then age.",
    )

    def __init__(self, *args: Any, versions: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = self.fields["version"]
        assert isinstance(version, forms.TypedChoiceField)
        version.choices = [("", f"latest (v{max(versions)})")] + [
            (str(v), f"v{v}") for v in sorted(versions, reverse=True)
        ]


class GraphUploadForm(forms.Form):
    spec = forms.CharField(
        label="Graph spec",
        required=False,
        help_text="JSON (or YAML). Its `name` says which graph this is a new version of.",
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false"}),
    )
    file = forms.FileField(label="…or upload a file", required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload = cleaned.get("file")
        text: str | bytes = cleaned.get("spec") or ""
        if upload is not None:
            limit = settings.RUNYARD["MAX_SPEC_BYTES"]
            if upload.size > limit:
                raise forms.ValidationError(f"The file is too large: at most {limit} bytes.")
            text = upload.read()
        if not text or (isinstance(text, str) and not text.strip()):
            raise forms.ValidationError("Paste a spec or choose a file.")
        try:
            cleaned["data"] = load_text(text)
        except SpecError as exc:
            raise forms.ValidationError("; ".join(str(p) for p in exc.problems)) from exc
        return cleaned


class CancelForm(forms.Form):
    action = forms.ChoiceField(
        choices=[
            ("interrupt", "Interrupt (keep state)"),
            ("rollback", "Roll back (restore the thread's state)"),
        ],
        initial="interrupt",
    )
    reason = forms.CharField(required=False, max_length=500)


class ApprovalForm(forms.Form):
    approval_id = forms.CharField(max_length=150, widget=forms.HiddenInput)
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    patch = JSONObjectField(
        empty_object=False,
        label="State patch (optional)",
        help_text="A JSON object merged into the state with the decision.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )
    route = forms.CharField(required=False, max_length=100)


class InputForm(forms.Form):
    input_id = forms.CharField(required=False, max_length=150, widget=forms.HiddenInput)
    value = forms.CharField(
        label="Value",
        strip=False,
        help_text="JSON (a number, object, list, true…); anything else is sent as text.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )

    def clean_value(self) -> Any:
        text = self.cleaned_data["value"]
        try:
            return loads_storable(text)
        except ValueError:
            return text


class GuidanceForm(forms.Form):
    message = forms.CharField(
        label="Guidance",
        max_length=4000,
        help_text="Appended to the state's `guidance` before the next node.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class ForkForm(forms.Form):
    step = forms.IntegerField(min_value=0, max_value=2**31 - 1)


class TenantSwitchForm(forms.Form):
    tenant = forms.UUIDField()
