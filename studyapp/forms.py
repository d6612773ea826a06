"""Parsing of what participants send: join links, the consent form, answers."""

import re
import uuid
from dataclasses import dataclass

from django import forms
from django.core import signing
from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _

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


def _whole_ms(value) -> int | None:
    """A browser's measurement: a garbled one must not cost the answer, so it is recorded as missing instead."""
    try:
        number = round(float(value))
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number >= 0 else None


class ConsentForm(forms.Form):
    decision = forms.ChoiceField(choices=[("accept", "I agree"), ("decline", "I do not agree")])
    enrol = forms.CharField(max_length=200)
    resume_code = forms.CharField(max_length=40, required=False)
    # Filled by gate.js: the window the participant consents from (the screen gate checks it again here).
    window_width = forms.CharField(max_length=20, required=False)
    window_height = forms.CharField(max_length=20, required=False)
    phone = forms.CharField(max_length=5, required=False)

    def clean_window_width(self) -> int | None:
        return _whole_ms(self.cleaned_data["window_width"])

    def clean_window_height(self) -> int | None:
        return _whole_ms(self.cleaned_data["window_height"])

    def clean_phone(self) -> bool:
        return self.cleaned_data["phone"] == "1"

    def __init__(self, data, *, study_code: uuid.UUID, browser_nonce: str | None):
        super().__init__(data)
        self._salt = f"{_CONSENT_SALT}:{study_code}:{browser_nonce}" if browser_nonce else None

    def clean_enrol(self) -> uuid.UUID:
        try:
            if self._salt is None:
                raise signing.BadSignature("no browser nonce")
            return uuid.UUID(signing.loads(self.cleaned_data["enrol"], salt=self._salt, max_age=CONSENT_TOKEN_MAX_AGE_S))
        except (signing.BadSignature, ValueError, TypeError):
            raise forms.ValidationError(_("The form has expired; please reload the page.")) from None

    @property
    def consent(self) -> bool:
        return self.cleaned_data["decision"] == "accept"


@dataclass(frozen=True)
class AnswerPost:
    choice: str  # exactly as sent: the service checks it is one of the values the page offered
    timings: dict[str, int | None]  # what trial.js measured (see studyapp.models.Response), by field name


ANSWER_TIMINGS = ("rt_client_ms", "images_ready_ms", "clock_start_ms", "blur_count", "hidden_ms")
# Longer than any value the page sends (a class index, "idk", a count of milliseconds).
_ANSWER_FIELD_MAX = 20


def answer_parse(data) -> AnswerPost | None:
    """The answer form (a trial's or a practice image's), parsed strictly; None: not an answer (a 400).

    By hand rather than with a Form: this runs once per answer, the hottest write, and a Form copies its field
    definitions for every instance (~6% of an answer's time, docs/load.md). The rules are a Form's CharFields':
    a choice must be there and not empty; no field may be longer than _ANSWER_FIELD_MAX or hold a NUL. The
    choice is not stripped: it must be exactly one of the values the page rendered. A garbled measurement must
    not cost the answer, so it is recorded as missing instead.
    """
    choice = data.get("choice", "")
    if not choice or not _answer_field_ok(choice):
        return None
    timings = {}
    for name in ANSWER_TIMINGS:
        value = data.get(name, "").strip()  # as a CharField strips (the choice is exact)
        if not _answer_field_ok(value):
            return None
        timings[name] = _whole_ms(value)
    return AnswerPost(choice=choice, timings=timings)


def _answer_field_ok(value: str) -> bool:
    return len(value) <= _ANSWER_FIELD_MAX and "\x00" not in value


class ReturnedIdsForm(forms.Form):
    """The admin's "mark returned": ids pasted, or a file such as Prolific's export (any column of ids)."""

    ids = forms.CharField(widget=forms.Textarea(attrs={"rows": 8, "cols": 60}), required=False,
                          help_text="One id per line (or separated by commas or spaces).")
    file = forms.FileField(required=False, help_text="A text or CSV file; every cell that is an id of this study "
                                                     "counts, so Prolific's export can be uploaded as it is.")

    def clean(self):
        data = super().clean()
        text = data.get("ids") or ""
        upload = data.get("file")
        if upload is not None:
            if upload.size > 5 * 1024 * 1024:
                raise forms.ValidationError("The file is over 5 MB.")
            try:
                text += "\n" + upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
        tokens = [t.strip().strip('"').strip("'") for t in re.split(r"[\s,;]+", text)]
        data["external_ids"] = [t for t in tokens if t and _printable_id(t)]
        if not data["external_ids"]:
            raise forms.ValidationError("Paste some ids or upload a file with them.")
        return data


def _printable_id(token: str) -> bool:
    return len(token) <= 200 and not re.search(r"[\x00-\x1f\x7f]", token)
