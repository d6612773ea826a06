"""The trial page, rendered once per part and language and then filled in per request: cached per process.

Most of a trial page is the same for every participant of a part: the answers (every class as a button, or
in shot parts a card with the class's example photos), the tools (type-to-filter, "I don't know"), the
enlarge dialog, the instructions, the page around them. They depend only on the study's frozen data, the
part and the study's language (frozen too), and on the study's title, which is read with every request and
is part of the key (a new title is a new entry). Rendering them was most of a trial page's cost (37 cards,
74 example URLs reversed, 37 translated labels; docs/load.md).

So the page is rendered once with stand-ins (random values that cannot occur otherwise) for what differs
between requests: the trial's code, the next trial's code, the CSRF token, the progress numbers, the photo's
size and the participant's resume code. It is then cut at the stand-ins into a skeleton, and each request
joins the skeleton's text with its own values (escaped). tests/studyapp/test_fragments.py checks that the
result is byte for byte what the template renders directly. A page with messages (a timed-out trial) is
rendered directly; so is anything of a draft study (nothing is cached for it).

What a skeleton holds is the same for everyone in the part: the class names (they are the answers, by
design) and, in shot parts, the example codes of that part (zero-shot parts have none). Never anything of
the trial, its item or the participant: those are the stand-ins.
"""

import re
import secrets
import uuid
from dataclasses import dataclass, replace
from types import SimpleNamespace

from django.contrib.messages import get_messages
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.html import escape
from django.utils.safestring import SafeString

from studyapp.models import Assignment, Study
from studyapp.selectors.participants import TrialPage

_LIMIT = 500  # a 37-class two-shot page is ~20 KB


@dataclass(frozen=True)
class TrialFragments:
    answers: SafeString
    tools: SafeString
    dialog: SafeString  # shot parts: the enlarged examples of a card
    help: SafeString  # the instructions (the participant's resume code is added per page)


_fragments: dict[tuple, TrialFragments] = {}


def trial_fragments(*, study: Study, condition_id: int, page: TrialPage) -> TrialFragments:
    key = (study.code, condition_id, page.shots, translation.get_language())
    cached = _fragments.get(key)
    if cached is not None:
        return cached
    fragments = TrialFragments(
        answers=render_to_string("studyapp/_answers.html", {"study": study, "choices": page.choices,
                                                            "shots": page.shots}),
        tools=render_to_string("studyapp/_tools.html", {"allow_idk": page.allow_idk}),
        dialog=render_to_string("studyapp/_enlarge_dialog.html") if page.shots else SafeString(""),
        help=render_to_string("studyapp/_trial_help.html", {"study": study, "phases": page.progress.phase_count}),
    )
    _store(_fragments, key, fragments, study)
    return fragments


def _store(cache: dict, key, value, study: Study) -> None:
    if study.status == Study.Status.DRAFT:
        return
    if len(cache) >= _LIMIT:
        cache.clear()
    cache[key] = value


@dataclass(frozen=True)
class _Skeleton:
    chunks: tuple[str, ...]  # the page's text around the holes
    holes: tuple[str, ...]  # which value goes between chunk i and chunk i + 1

    def fill(self, values: dict[str, str]) -> str:
        out = [self.chunks[0]]
        for hole, chunk in zip(self.holes, self.chunks[1:], strict=True):
            out += (values[hole], chunk)
        return "".join(out)


_skeletons: dict[tuple, _Skeleton | None] = {}


def trial_page_html(*, request, study: Study, assignment: Assignment, page: TrialPage) -> str:
    """The trial page's HTML, as templates/studyapp/trial.html renders it for this request."""
    context = {"study": study, "assignment": assignment, "page": page,
               "fragments": trial_fragments(study=study, condition_id=assignment.condition_id, page=page)}
    if get_messages(request) or study.status == Study.Status.DRAFT:
        return render_to_string("studyapp/trial.html", context, request=request)
    participant = assignment.participant
    progress = page.progress
    first = progress.trial_number == 1
    with_resume = bool(participant.external_id and participant.resume_code)
    key = (study.code, study.title, assignment.condition_id, translation.get_language(), page.shots,
           progress.phase_number, progress.phase_count, page.allow_idk, first, page.next_trial_code is not None,
           with_resume)
    skeleton = _skeletons.get(key)
    if key not in _skeletons:
        skeleton = _skeleton_render(context=context, first=first, with_resume=with_resume)
        _store(_skeletons, key, skeleton, study)
    if skeleton is None:  # a stand-in did not come through as expected: render directly
        return render_to_string("studyapp/trial.html", context, request=request)
    return skeleton.fill({
        "trial_code": str(assignment.code), "next_code": str(page.next_trial_code), "csrf": escape(get_token(request)),
        "trial_number": str(progress.trial_number), "trial_count": str(progress.trial_count),
        "percent": str(progress.percent), "width": str(assignment.item.width), "height": str(assignment.item.height),
        "resume_code": escape(participant.resume_code),
    })


def _skeleton_render(*, context: dict, first: bool, with_resume: bool) -> _Skeleton | None:
    """Render the page once with stand-ins and cut it at them."""
    page: TrialPage = context["page"]
    number = secrets.randbelow(10**12) + 10**12  # 13-digit numbers no page shows
    stand_in = {
        "trial_code": str(uuid.uuid4()), "next_code": str(uuid.uuid4()), "csrf": "x" + secrets.token_hex(31),
        "trial_number": str(number + 1), "trial_count": str(number + 2), "percent": str(number + 3),
        "width": str(number + 4), "height": str(number + 5), "resume_code": "R" + secrets.token_hex(8).upper(),
    }
    if first:
        del stand_in["trial_number"]  # the first trial's notice shows only there, and its number is 1
    p = page.progress
    progress = SimpleNamespace(phase_number=p.phase_number, phase_count=p.phase_count, percent=stand_in["percent"],
                               trial_number=1 if first else stand_in["trial_number"], trial_count=stand_in["trial_count"])
    participant = SimpleNamespace(external_id="x" if with_resume else None,
                                  resume_code=stand_in["resume_code"] if with_resume else "")
    assignment = SimpleNamespace(code=uuid.UUID(stand_in["trial_code"]), participant=participant,
                                 item=SimpleNamespace(width=stand_in["width"], height=stand_in["height"]))
    page = replace(page, progress=progress,  # type: ignore[arg-type]
                   next_trial_code=uuid.UUID(stand_in["next_code"]) if page.next_trial_code else None)
    html = render_to_string("studyapp/trial.html", {**context, "page": page, "assignment": assignment,
                                                    "csrf_token": stand_in["csrf"]})
    holes_by_text = {text: name for name, text in stand_in.items()}
    parts = re.split("(" + "|".join(re.escape(text) for text in stand_in.values()) + ")", html)
    chunks, holes = tuple(parts[0::2]), tuple(holes_by_text[text] for text in parts[1::2])
    expected = {"trial_code", "csrf", "trial_count", "percent", "width", "height"}
    expected |= {"trial_number"} if not first else set()
    expected |= {"next_code"} if page.next_trial_code else set()
    expected |= {"resume_code"} if with_resume else set()
    return _Skeleton(chunks=chunks, holes=holes) if set(holes) == expected else None
