"""Parsing of what participants send: join links, the consent form, answers."""

import uuid

from django import forms
from django.core import signing
from django.core.validators import RegexValidator

# Printable ids only: they end up in exports and the admin.
_printable = RegexValidator(r"^[^\x00-\x1f\x7f]*$", "contains control characters")
_CONSENT_SALT = "studyapp.consent"
# Long enough to read a consent text, short enough that a saved copy of the page is soon worth nothing.
CONSENT_TOKEN_MAX_AGE_S = 30 * 60


class JoinLinkForm(forms.Form):
    """The join link's query: Prolific's parameters, or a generic `pid` from any other recruiter."""

    PROLIFIC_PID = forms.CharField(max_length=200, required=False, validators=[_printable])
    STUDY_ID = forms.CharField(max_length=200, required=False, validators=[_printable])
    SESSION_ID = forms.CharField(max_length=200, required=False, validators=[_printable])
    pid = forms.CharField(max_length=200, required=False, validators=[_printable])

    @property
    def external_id(self) -> str | None:
        return self.cleaned_data["PROLIFIC_PID"] or self.cleaned_data["pid"] or None


def consent_token(*, study_code: uuid.UUID, browser_nonce: str) -> str:
    """A consent form's token: a fresh random enrolment id, signed for this study and this browser.

    The signature covers the browser's nonce (an HttpOnly cookie), so the token is worth nothing in
    another browser; it is timestamped, so it expires; it names no participant (the enrolment id
    becomes one only when the form is posted, and only that browser can post it); and it enrols once
    (Participant.enrolment is unique).
    """
    return signing.dumps(uuid.uuid4().hex, salt=f"{_CONSENT_SALT}:{study_code}:{browser_nonce}")


class ConsentForm(forms.Form):
    decision = forms.ChoiceField(choices=[("accept", "I agree"), ("decline", "I do not agree")])
    enrol = forms.CharField(max_length=200)
    resume_code = forms.CharField(max_length=40, required=False)

    def __init__(self, data, *, study_code: uuid.UUID, browser_nonce: str | None):
        super().__init__(data)
        self._salt = f"{_CONSENT_SALT}:{study_code}:{browser_nonce}" if browser_nonce else None

    def clean_enrol(self) -> uuid.UUID:
        try:
            if self._salt is None:
                raise signing.BadSignature("no browser nonce")
            return uuid.UUID(signing.loads(self.cleaned_data["enrol"], salt=self._salt, max_age=CONSENT_TOKEN_MAX_AGE_S))
        except (signing.BadSignature, ValueError, TypeError):
            raise forms.ValidationError("The form has expired; please reload the page.") from None

    @property
    def consent(self) -> bool:
        return self.cleaned_data["decision"] == "accept"


class AnswerForm(forms.Form):
    # Not stripped: the answer must be exactly one of the values the page rendered.
    choice = forms.CharField(max_length=20, strip=False)
    rt_client_ms = forms.CharField(max_length=20, required=False)

    def clean_rt_client_ms(self) -> int | None:
        # A garbled timing must not cost the answer: it is recorded as missing instead.
        try:
            value = round(float(self.cleaned_data["rt_client_ms"]))
        except (TypeError, ValueError, OverflowError):
            return None
        return value if value >= 0 else None
