"""Rendered pieces of participant pages that are the same for every participant of a part: cached per process.

A trial page's answers (every class as a button, or in shot parts a card with the class's example photos),
its tools (type-to-filter, "I don't know"), the enlarge dialog and the instructions depend only on the
study's frozen data, the part and the study's language (frozen too). Rendering them was most of a
two-shot page's time (37 cards, 74 example URLs reversed, 37 translated labels; docs/load.md), so each
process renders them once per part and language.

What they hold is the same for everyone: the class names (they are the answers, by design) and, in shot
parts, the example codes of that part (zero-shot parts have none). Never anything of the trial, its item
or the participant. A draft study is not cached (it may still change).
"""

import uuid
from dataclasses import dataclass

from django.template.loader import render_to_string
from django.utils import translation
from django.utils.safestring import SafeString

from studyapp.models import Study
from studyapp.selectors.participants import TrialPage

_LIMIT = 500  # a 37-class two-shot part renders to ~20 KB


@dataclass(frozen=True)
class TrialFragments:
    answers: SafeString
    tools: SafeString
    dialog: SafeString  # shot parts: the enlarged examples of a card
    help: SafeString  # the instructions (the participant's resume code is added per page)


_rendered: dict[tuple[uuid.UUID, int, int, str], TrialFragments] = {}


def trial_fragments(*, study: Study, condition_id: int, page: TrialPage) -> TrialFragments:
    key = (study.code, condition_id, page.shots, translation.get_language())
    cached = _rendered.get(key)
    if cached is not None:
        return cached
    fragments = TrialFragments(
        answers=render_to_string("studyapp/_answers.html", {"study": study, "choices": page.choices,
                                                            "shots": page.shots}),
        tools=render_to_string("studyapp/_tools.html", {"allow_idk": page.allow_idk}),
        dialog=render_to_string("studyapp/_enlarge_dialog.html") if page.shots else SafeString(""),
        help=render_to_string("studyapp/_trial_help.html", {"study": study, "phases": page.progress.phase_count}),
    )
    if study.status != Study.Status.DRAFT:
        if len(_rendered) >= _LIMIT:
            _rendered.clear()
        _rendered[key] = fragments
    return fragments
