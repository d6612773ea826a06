"""Participant pages. A participant is known by a signed, per-study cookie holding their code;
every URL carries opaque codes only, and every trial or image is looked up through the owner.

Only POSTs move a participant on (consent, start/continue, answer); a GET shows where they are.
Joining: a GET shows the consent form (and never binds a browser to anyone); posting it enrols, or
resumes a known id only with proof (studyapp.services.participants.identity).
"""

import secrets
import uuid
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from studyapp.forms import ConsentForm, JoinLinkForm, answer_parse, consent_token
from studyapp.fragments import trial_page_html
from studyapp.models import Assignment, Participant, Study
from studyapp.selectors.hot_reads import (
    ImageViewer,
    image_viewer_get,
    participant_trial_following_get,
    participant_trial_get,
    trial_image_path,
)
from studyapp.selectors.participants import (
    NextStep,
    Step,
    example_image_path,
    participant_get,
    participant_route,
    practice_trial,
    screen_fits,
    study_choices,
    trial_page,
    user_agent_is_phone,
)
from studyapp.selectors.studies import StudyNotFound, study_get_by_code
from studyapp.services.images import image_path
from studyapp.services.participants import (
    ClientTimings,
    Entry,
    InvalidChoice,
    JoinLink,
    assignment_show,
    participant_enter,
    participant_start,
    participant_step_after_answer,
    participant_withdraw,
    response_submit,
)
from studyapp.throttle import client_address

_COOKIE_SALT = "studyapp.participant"
_COOKIE_MAX_AGE = 60 * 60 * 24 * 30
# A random value per browser that consent tokens are signed with: a token works only where it was shown.
BROWSER_COOKIE = "studyapp_browser"
# Trial photos may stay in the participant's own browser for a while (never in a shared cache): the page
# prefetches the next trial's photo, which is only of use if the browser may keep it until then.
_TRIAL_IMAGE_CACHE = "private, max-age=3600"
_EXAMPLE_IMAGE_CACHE = "private, max-age=86400"


def home(request):
    return render(request, "home.html")


def _study(study_code: uuid.UUID) -> Study:
    try:
        return study_get_by_code(code=study_code)
    except StudyNotFound:
        raise Http404("no such study") from None


def _cookie_name(study_code: uuid.UUID) -> str:
    return f"participant_{study_code.hex}"


def _cookie_code(request, study_code: uuid.UUID) -> str | None:
    return request.get_signed_cookie(_cookie_name(study_code), default=None, salt=_COOKIE_SALT, max_age=_COOKIE_MAX_AGE)


def _cookie_participant(request, study: Study) -> Participant | None:
    return participant_get(study=study, code=_cookie_code(request, study.code))


def _bind(response, study: Study, participant: Participant):
    response.set_signed_cookie(
        _cookie_name(study.code), str(participant.code), salt=_COOKIE_SALT, max_age=_COOKIE_MAX_AGE,
        path=f"{settings.PARTICIPANT_URL_PREFIX}{study.code}/", secure=settings.SESSION_COOKIE_SECURE,
        httponly=True, samesite="Lax",
    )
    return response


def _image_viewer(request, study_code: uuid.UUID) -> ImageViewer:
    """Who asks for an image, without loading the study (a page requests dozens); 404 for a stranger."""
    viewer = image_viewer_get(study_code=study_code, code=_cookie_code(request, study_code))
    if viewer is None:
        raise Http404("no participant")
    return viewer


def _go(study: Study, participant: Participant, step: NextStep | None = None):
    """Redirect to wherever the participant's state says they belong (read-only unless `step` says more)."""
    step = step or participant_route(participant=participant)
    if step.step == Step.TRIAL:
        return redirect("studyapp:trial", study_code=study.code, assignment_code=step.assignment.code)
    names = {
        Step.INSTRUCTIONS: "studyapp:instructions", Step.CONTINUE: "studyapp:next", Step.DECLINED: "studyapp:declined",
        Step.COMPLETE: "studyapp:done", Step.FULL: "studyapp:full", Step.WITHDRAWN: "studyapp:left",
    }
    return redirect(names[step.step], study_code=study.code)


def _closed(request, study: Study):
    status = 410 if study.status == Study.Status.CLOSED else 404
    return render(request, "studyapp/closed.html", {"study": study}, status=status)


def _consent_page(request, study: Study, *, form=None, template="studyapp/consent.html", status=200, token=None,
                  **context):
    """The consent form (or the resume-code form after it), with a token for this browser."""
    nonce = request.COOKIES.get(BROWSER_COOKIE, "")
    fresh = len(nonce) < 32
    if fresh:
        nonce = secrets.token_urlsafe(32)
    token = token or consent_token(study_code=study.code, browser_nonce=nonce)
    response = render(request, template, {"study": study, "enrol": token, "form": form, **context}, status=status)
    if fresh:
        response.set_cookie(BROWSER_COOKIE, nonce, max_age=_COOKIE_MAX_AGE, path=settings.PARTICIPANT_URL_PREFIX,
                            secure=settings.SESSION_COOKIE_SECURE, httponly=True, samesite="Lax")
    return response


@require_http_methods(["GET", "POST"])
def join(request, study_code):
    study = _study(study_code)
    link = JoinLinkForm(request.GET)
    if not link.is_valid():
        return render(request, "studyapp/bad_link.html", {"study": study}, status=400)
    external_id = link.external_id
    current = _cookie_participant(request, study)
    # The browser's own participant, unless the link names someone else: then it is asked again (consent,
    # and proof for a known id) and a GET changes nothing, so a link cannot switch a browser to another person.
    if current is not None and (not external_id or external_id == current.external_id):
        return _go(study, current)
    if study.status != Study.Status.OPEN and request.method == "GET":
        return _closed(request, study)
    if study.participant_id_required and not external_id:
        return render(request, "studyapp/id_required.html", {"study": study}, status=400)
    phone = user_agent_is_phone(request.META.get("HTTP_USER_AGENT", ""))
    if not screen_fits(study=study, width=None, height=None, phone=phone):
        return _screen_gate(request, study)
    if request.method == "GET":
        return _consent_page(request, study)
    form = ConsentForm(request.POST, study_code=study.code, browser_nonce=request.COOKIES.get(BROWSER_COOKIE))
    if not form.is_valid():
        return _consent_page(request, study, form=form) if study.status == Study.Status.OPEN else _closed(request, study)
    data = form.cleaned_data
    if form.consent and not screen_fits(study=study, width=data["window_width"], height=data["window_height"],
                                        phone=phone or data["phone"]):
        return _screen_gate(request, study)  # gate.js turns them away first; this holds without it
    outcome = participant_enter(
        study=study, enrolment=form.cleaned_data["enrol"], consent=form.consent,
        link=JoinLink(external_id=external_id, external_study_id=link.cleaned_data["STUDY_ID"],
                      external_session_id=link.cleaned_data["SESSION_ID"]),
        resume_code=form.cleaned_data["resume_code"], client_address=client_address(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:500], joins_per_minute=settings.STUDY_JOIN_RATE_PER_MINUTE,
    )
    if outcome.participant is not None:
        return _bind(_go(study, outcome.participant), study, outcome.participant)
    if outcome.entry in (Entry.PROOF_NEEDED, Entry.PROOF_WRONG, Entry.PROOF_LOCKED):
        # The same (still unused) token: the code goes with the consent the visitor just gave.
        status = {Entry.PROOF_NEEDED: 200, Entry.PROOF_WRONG: 403, Entry.PROOF_LOCKED: 429}[outcome.entry]
        response = _consent_page(request, study, template="studyapp/resume.html", status=status,
                                 token=request.POST["enrol"], wrong=outcome.entry == Entry.PROOF_WRONG,
                                 locked=outcome.entry == Entry.PROOF_LOCKED)
        if outcome.entry == Entry.PROOF_LOCKED:
            response["Retry-After"] = "900"
        return response
    if outcome.entry == Entry.SECOND_ATTEMPT:
        return render(request, "studyapp/second_attempt.html", {"study": study}, status=403)
    if outcome.entry == Entry.RATE_LIMITED:
        response = render(request, "studyapp/rate_limited.html", {"study": study}, status=429)
        response["Retry-After"] = "60"
        return response
    return _closed(request, study)


def _screen_gate(request, study: Study):
    """Before consent, for a window or device the study does not take: says why, records nothing."""
    return render(request, "studyapp/screen_gate.html", {"study": study, "gate_only": True})


@require_http_methods(["GET", "POST"])
def instructions(request, study_code):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    if request.method == "POST":
        # Start, or continue into the next part (the "continue" page posts here too).
        return _go(study, participant, participant_start(participant=participant))
    step = participant_route(participant=participant)
    if step.step != Step.INSTRUCTIONS:
        return _go(study, participant, step)
    phases = 1 if study.design == Study.Design.BETWEEN else study.conditions.count()
    return render(request, "studyapp/instructions.html", {"study": study, "phases": phases, "participant": participant})


@require_http_methods(["GET", "POST"])
def practice(request, study_code, number):
    """A practice image with feedback, before the first part. Nothing is stored: the answer is compared
    with the practice image's label (a shot-split image, never a test item) and the feedback names it."""
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    step = participant_route(participant=participant)
    if step.step != Step.INSTRUCTIONS:
        return _go(study, participant, step)  # practice is over once the study proper has started
    current = practice_trial(study=study, number=number)
    if current is None:
        raise Http404("no such practice image")
    choices = study_choices(study=study)
    context = {"study": study, "practice": current, "choices": choices, "allow_idk": study.allow_idk}
    if request.method == "POST":
        posted = answer_parse(request.POST)
        chosen = posted.choice if posted is not None else ""
        right = next((c.name for c in choices if c.value == str(current.item.label.index)), "")
        context.update(answered=True, correct=chosen == str(current.item.label.index), idk=chosen == "idk",
                       right_name=right, last=current.number == current.count)
    return render(request, "studyapp/practice.html", context)


@require_GET
def practice_image(request, study_code, number):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    current = practice_trial(study=study, number=number) if participant is not None else None
    if current is None or participant.consent != Participant.Consent.GIVEN or participant.withdrawn_at is not None:
        raise Http404("no such image")
    return _image(current.item.image, cache_control=_TRIAL_IMAGE_CACHE)


@require_GET
def next_trial(request, study_code):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    step = participant_route(participant=participant)
    if step.step == Step.CONTINUE:
        return render(request, "studyapp/continue.html", {"study": study})
    return _go(study, participant, step)


@require_http_methods(["GET", "POST"])
def trial(request, study_code, assignment_code):
    # The trial with its participant, study, condition and item in one read, found only through the participant
    # the cookie names in the study the URL names: another participant's trial looks like no trial at all.
    # An answer reads, in the same statement, the trial it will usually send the participant to next.
    owner = {"study_code": study_code, "participant_code": _cookie_code(request, study_code), "code": assignment_code}
    if request.method == "POST":
        assignment, following = participant_trial_following_get(**owner) or (None, None)
    else:
        assignment = participant_trial_get(**owner)
    if assignment is None:
        raise Http404("no such trial")
    participant = assignment.participant
    study = participant.study
    if participant.withdrawn_at is not None:
        return redirect("studyapp:left", study_code=study.code)
    if request.method == "POST":
        return _answer(request, study, assignment, following)
    shown = assignment_show(assignment=assignment)
    if shown is None:
        if assignment.status == Assignment.Status.EXPIRED:
            messages.info(request, _("That image timed out and went to someone else. Here is the next one."))
        return redirect("studyapp:next", study_code=study.code)
    return HttpResponse(trial_page_html(request=request, study=study, assignment=shown,
                                        page=trial_page(assignment=shown)))


def _answer(request, study: Study, assignment: Assignment, following: Assignment | None):
    posted = answer_parse(request.POST)
    if posted is None:
        return HttpResponseBadRequest(_("Please choose one of the answers."), content_type="text/plain; charset=utf-8")
    try:
        outcome = response_submit(assignment=assignment, choice=posted.choice, timings=ClientTimings(**posted.timings))
    except InvalidChoice:
        return HttpResponseBadRequest(_("Please choose one of the answers."), content_type="text/plain; charset=utf-8")
    if outcome.refused:
        messages.info(request, _("Sorry, that image timed out and went to someone else, so your answer was not "
                                 "needed. Here is the next one."))
    # Straight to the next trial, allocating the next part if due (this is a POST): one round trip less
    # per answer, a fifth of the requests under load (docs/load.md).
    return _go(study, assignment.participant, participant_step_after_answer(assignment=assignment, following=following))


@require_GET
def trial_image(request, study_code, assignment_code):
    relative_path = trial_image_path(study_code=study_code, participant_code=_cookie_code(request, study_code),
                                     code=assignment_code)
    if relative_path is None:
        raise Http404("no such image")
    return _image(relative_path, cache_control=_TRIAL_IMAGE_CACHE)


@require_GET
def example_image(request, study_code, example_code):
    relative_path = example_image_path(viewer=_image_viewer(request, study_code), code=example_code)
    if relative_path is None:
        raise Http404("no such example")
    # Labelled by design and the same on every trial page: let the browser keep them.
    return _image(relative_path, cache_control=_EXAMPLE_IMAGE_CACHE)


def _image(relative_path: str, *, cache_control: str) -> HttpResponse:
    """An image the caller has checked the asker may see, under the opaque URL they asked for."""
    if settings.IMAGES_ACCEL_REDIRECT:
        # Behind nginx or Caddy (docs/deploy.md): the proxy sends the file itself from an internal location,
        # so this process did only the owner check. The proxy consumes the header: the stored name (a content
        # hash) never reaches the browser, which sees this response's other headers and the bytes.
        response = HttpResponse(content_type="image/jpeg")
        response["X-Accel-Redirect"] = settings.IMAGES_ACCEL_REDIRECT + quote(relative_path)
    else:
        # Bytes, not FileResponse: that would name the content-hashed file in Content-Disposition.
        response = HttpResponse(image_path(relative_path=relative_path).read_bytes(), content_type="image/jpeg")
    response["Cache-Control"] = cache_control
    return response


@require_GET
def done(request, study_code):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    if participant.completed_at is None:
        return _go(study, participant)
    if participant.attention_failed:
        # Prolific's rule: someone who failed the attention checks is asked to return the study (no code, no
        # rejection wording); their answers are kept, flagged, and left out of reports by default.
        return render(request, "studyapp/please_return.html", {"study": study})
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


@require_http_methods(["GET", "POST"])
def leave(request, study_code):
    """ "Stop and leave the study": GET asks to confirm, POST withdraws (places freed at once, answers kept)
    and sends them to the study's return URL, if it has one."""
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None:
        return redirect("studyapp:join", study_code=study.code)
    if participant.completed_at is not None or participant.consent != Participant.Consent.GIVEN:
        return _go(study, participant)
    if request.method == "GET":
        if participant.withdrawn_at is not None:
            return redirect("studyapp:left", study_code=study.code)
        return render(request, "studyapp/leave.html", {"study": study, "back": request.GET.get("from", "")})
    participant_withdraw(participant=participant)
    return redirect(study.return_url) if study.return_url else redirect("studyapp:left", study_code=study.code)


@require_GET
def left(request, study_code):
    study = _study(study_code)
    participant = _cookie_participant(request, study)
    if participant is None or participant.withdrawn_at is None:
        return redirect("studyapp:join", study_code=study.code)
    return render(request, "studyapp/left.html", {"study": study})
