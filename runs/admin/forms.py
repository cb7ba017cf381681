from __future__ import annotations

from django import forms

from runs.services.controls import CANCEL_ACTIONS


class OperationForm(forms.Form):
    """The confirmation step of an operator action: why, and for cancels, how."""

    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded in the audit log and, for cancels, in the run's error message.",
    )
    cancel_action = forms.ChoiceField(
        choices=[
            ("interrupt", "Interrupt: stop at the next safe point, keep the state"),
            ("rollback", "Rollback: also restore the thread's state from before the run"),
        ],
        initial="interrupt",
        widget=forms.RadioSelect,
        required=False,
    )

    def __init__(self, *args: object, asks_cancel_action: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if asks_cancel_action:
            self.fields["cancel_action"].required = True
        else:
            del self.fields["cancel_action"]

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why: the reason goes into the audit log.")
        return reason

    def clean_cancel_action(self) -> str:
        value = self.cleaned_data.get("cancel_action") or "interrupt"
        if value not in CANCEL_ACTIONS:
            raise forms.ValidationError(f"Choose one of {', '.join(CANCEL_ACTIONS)}.")
        return value


class ReconcileForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
        help_text="Optional; recorded in the audit log with each resolved run.",
    )
