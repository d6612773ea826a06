"""Parsing of what participants send: join links, the consent form, answers."""

from django import forms
from django.core import signing
from django.core.validators import RegexValidator

# Printable ids only: they end up in exports and the admin.
_printable = RegexValidator(r"^[^\x00-\x1f\x7f]*$", "contains control characters")
_ENROL_SALT = "studyapp.enrol"


class JoinLinkForm(forms.Form):
    """The join link's query: Prolific's parameters, or a generic `pid` from any other recruiter."""

    PROLIFIC_PID = forms.CharField(max_length=200, required=False, validators=[_printable])
    STUDY_ID = forms.CharField(max_length=200, required=False, validators=[_printable])
    SESSION_ID = forms.CharField(max_length=200, required=False, validators=[_printable])
    pid = forms.CharField(max_length=200, required=False, validators=[_printable])

    @property
    def external_id(self) -> str | None:
        return self.cleaned_data["PROLIFIC_PID"] or self.cleaned_data["pid"] or None


class ConsentForm(forms.Form):
    decision = forms.ChoiceField(choices=[("accept", "I agree"), ("decline", "I do not agree")])
    # The participant code to be, signed: a repeated post of the same form enrols one participant.
    enrol = forms.CharField(max_length=200)

    @staticmethod
    def enrol_token(*, code: str) -> str:
        return signing.dumps(code, salt=_ENROL_SALT)

    def clean_enrol(self) -> str:
        try:
            return signing.loads(self.cleaned_data["enrol"], salt=_ENROL_SALT)
        except signing.BadSignature:
            raise forms.ValidationError("The form has expired; please reload the page.") from None

    @property
    def consent(self) -> bool:
        return self.cleaned_data["decision"] == "accept"


class AnswerForm(forms.Form):
    choice = forms.CharField(max_length=20)
    rt_client_ms = forms.CharField(max_length=20, required=False)

    def clean_rt_client_ms(self) -> int | None:
        # A garbled timing must not cost the answer: it is recorded as missing instead.
        try:
            value = round(float(self.cleaned_data["rt_client_ms"]))
        except (TypeError, ValueError, OverflowError):
            return None
        return value if value >= 0 else None
