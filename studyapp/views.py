"""Participant pages. A participant is known by a signed, per-study cookie holding their code;
every URL carries opaque codes only, and every trial or image is looked up through the owner."""

import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from studyapp.forms import AnswerForm, ConsentForm, JoinLinkForm
from studyapp.models import Assignment, Participant, Study
from studyapp.selectors.participants import (
    ImageViewer,
    assignment_get_for_participant,
    example_image_path,
    image_viewer_get,
    participant_get,
    participant_get_by_external_id,
    trial_image_path,
    trial_page,
)
from studyapp.selectors.studies import StudyNotFound, study_get_by_code
from studyapp.services.images import image_path
from studyapp.services.participants import (
    InvalidChoice,
    Step,
    StudyNotOpen,
    assignment_show,
    join_rate_allow,
    participant_join,
    participant_next_step,
    participant_start,
    response_submit,
)
from studyapp.throttle import client_address

_COOKIE_SALT = "studyapp.participant"
_COOKIE_MAX_AGE = 60 * 60 * 24 * 30


def home(request):
    return render(request, "home.html")


def _study(study_code: uuid.UUID) -> Study:
    try:
        return study_get_by_code(code=study_code)
    except StudyNotFound:
        raise Http404("no such study") from None


def _cookie_name(study_code: uuid.UUID) -> str:
    return f"participant_{study_code.hex}"


def _cookie_participant(request, study: Study) -> Participant | None:
    code = request.get_signed_cookie(_cookie_name(study.code), default=None, salt=_COOKIE_SALT, max_age=_COOKIE_MAX_AGE)
    return participant_get(study=study, code=code)


def _bind(response, study: Study, participant: Participant):
    response.set_signed_cookie(
        _cookie_name(study.code), str(participant.code), salt=_COOKIE_SALT, max_age=_COOKIE_MAX_AGE,
        path=f"{settings.PARTICIPANT_URL_PREFIX}{study.code}/", secure=settings.SESSION_COOKIE_SECURE,
        httponly=True, samesite="Lax",
    )
    return response


def _require_participant(request, study: Study) -> Participant:
    participant = _cookie_participant(request, study)
    if participant is None:
        raise Http404("no participant")
    return participant


def _image_viewer(request, study_code: uuid.UUID) -> ImageViewer:
    """Who asks for an image, without loading the study (a page requests dozens); 404 for a stranger."""
    code = request.get_signed_cookie(_cookie_name(study_code), default=None, salt=_COOKIE_SALT, max_age=_COOKIE_MAX_AGE)
    viewer = image_viewer_get(study_code=study_code, code=code)
    if viewer is None:
        raise Http404("no participant")
    return viewer


def _go(study: Study, participant: Participant, step=None):
    """Redirect to wherever the participant's state says they belong."""
    step = step or participant_next_step(participant=participant)
    if step.step == Step.TRIAL:
        return redirect("studyapp:trial", study_code=study.code, assignment_code=step.assignment.code)
    names = {
        Step.INSTRUCTIONS: "studyapp:instructions", Step.DECLINED: "studyapp:declined",
        Step.COMPLETE: "studyapp:done", Step.FULL: "studyapp:full",
    }
    return redirect(names[step.step], study_code=study.code)


def _closed(request, study: Study):
    status = 410 if study.status == Study.Status.CLOSED else 404
    return render(request, "studyapp/closed.html", {"study": study}, status=status)


@require_http_methods(["GET", "POST"])
def join(request, study_code):
    study = _study(study_code)
    link = JoinLinkForm(request.GET)
    if not link.is_valid():
        return render(request, "studyapp/bad_link.html", {"study": study}, status=400)
    external_id = link.external_id
    # An external id names the participant; without one, the cookie does.
    if external_id:
        known = participant_get_by_external_id(study=study, external_id=external_id)
    else:
        known = _cookie_participant(request, study)
    if known is not None:
        return _bind(_go(study, known), study, known)
    if study.status != Study.Status.OPEN:
        return _closed(request, study)
    form = ConsentForm(request.POST) if request.method == "POST" else None
    if form is None or not form.is_valid():
        token = ConsentForm.enrol_token(code=str(uuid.uuid4()))
        return render(request, "studyapp/consent.html", {"study": study, "enrol": token, "form": form})
    if not join_rate_allow(study=study, client=client_address(request),
                           per_minute=settings.STUDY_JOIN_RATE_PER_MINUTE):
        response = render(request, "studyapp/rate_limited.html", {"study": study}, status=429)
        response["Retry-After"] = "60"
        return response
    try:
        participant = participant_join(
            study=study, code=uuid.UUID(form.cleaned_data["enrol"]), consent=form.consent, external_id=external_id,
            external_study_id=link.cleaned_data["STUDY_ID"], external_session_id=link.cleaned_data["SESSION_ID"],
        )
    except StudyNotOpen:
        return _closed(request, study)
    return _bind(_go(study, participant), study, participant)


@require_http_methods(["GET", "POST"])
def instructions(request, study_code):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    if request.method == "POST":
        return _go(study, participant, participant_start(participant=participant))
    step = participant_next_step(participant=participant)
    if step.step != Step.INSTRUCTIONS:
        return _go(study, participant, step)
    phases = 1 if study.design == Study.Design.BETWEEN else study.conditions.count()
    return render(request, "studyapp/instructions.html", {"study": study, "phases": phases})


@require_GET
def next_trial(request, study_code):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    return _go(study, participant)


@require_http_methods(["GET", "POST"])
def trial(request, study_code, assignment_code):
    study = _study(study_code)
    participant = _require_participant(request, study)
    try:
        assignment = assignment_get_for_participant(participant=participant, code=assignment_code)
    except Assignment.DoesNotExist:
        raise Http404("no such trial") from None
    if request.method == "POST":
        return _answer(request, study, assignment)
    shown = assignment_show(assignment=assignment)
    if shown is None:
        if assignment.status == Assignment.Status.EXPIRED:
            messages.info(request, "That image timed out and went to someone else. Here is the next one.")
        return redirect("studyapp:next", study_code=study.code)
    context = {"study": study, "assignment": shown, "page": trial_page(assignment=shown)}
    return render(request, "studyapp/trial.html", context)


def _answer(request, study: Study, assignment: Assignment):
    form = AnswerForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Please choose one of the answers.")
    try:
        outcome = response_submit(
            assignment=assignment, choice=form.cleaned_data["choice"], rt_client_ms=form.cleaned_data["rt_client_ms"]
        )
    except InvalidChoice:
        return HttpResponseBadRequest("Please choose one of the answers.")
    if outcome.refused:
        messages.info(request, "Sorry, that image timed out and went to someone else, so your answer was not needed. "
                               "Here is the next one.")
    # Straight to wherever the participant goes next (as /next would): one round trip less per answer,
    # a fifth of the requests under load (docs/load.md).
    return _go(study, assignment.participant)


@require_GET
def trial_image(request, study_code, assignment_code):
    relative_path = trial_image_path(viewer=_image_viewer(request, study_code), code=assignment_code)
    if relative_path is None:
        raise Http404("no such image")
    # Bytes, not FileResponse: that would name the content-hashed file in Content-Disposition.
    return HttpResponse(image_path(relative_path=relative_path).read_bytes(), content_type="image/jpeg")


@require_GET
def example_image(request, study_code, example_code):
    relative_path = example_image_path(viewer=_image_viewer(request, study_code), code=example_code)
    if relative_path is None:
        raise Http404("no such example")
    response = HttpResponse(image_path(relative_path=relative_path).read_bytes(), content_type="image/jpeg")
    # Labelled by design and the same on every trial page: let the browser keep them.
    response["Cache-Control"] = "private, max-age=86400"
    return response


@require_GET
def done(request, study_code):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    if participant.completed_at is None:
        return _go(study, participant)
    return render(request, "studyapp/done.html", {
        "study": study, "participant": participant,
        "continue_url": _completion_url(study.completion_url, participant.completion_code),
    })


def _completion_url(url: str, code: str) -> str:
    if not url:
        return ""
    # A URL that already has a query (e.g. Prolific's ?cc=XXXX) is used as it is.
    return url if urlsplit(url).query else f"{url}?cc={code}"


@require_GET
def declined(request, study_code):
    study = _study(study_code)
    return render(request, "studyapp/declined.html", {"study": study})


@require_GET
def full(request, study_code):
    study = _study(study_code)
    return render(request, "studyapp/full.html", {"study": study})
