"""Staff-only study pages: the dashboard (live precision and a stopping rule), planning, the protocol download.

Thin views: parse input, call one selector or service, render. Studies are named by their public code.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from studyapp.models import FrozenStudyError, Study
from studyapp.selectors.protocol import study_protocol_get
from studyapp.selectors.studies import StudyNotFound, study_get_by_code
from studyapp.services.protocol import study_protocol_write


def _study_or_404(code) -> Study:
    try:
        return study_get_by_code(code=code)
    except StudyNotFound:
        raise Http404("no such study") from None


@never_cache
@staff_member_required
def study_protocol_download(request, code):
    study = _study_or_404(code)
    protocol = study_protocol_get(study=study)
    if protocol is None:
        raise Http404("this study has no protocol (a draft, or opened before protocols were recorded)")
    # The registered bytes themselves: sha256sum of the file is the registered hash.
    response = HttpResponse(protocol.document.encode("utf-8"), content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="protocol-{study.code}-{protocol.sha256[:12]}.json"'
    return response


@require_POST
@staff_member_required
def study_protocol_write_view(request, code):
    study = _study_or_404(code)
    try:
        protocol = study_protocol_write(study=study, retrospective=True)
    except FrozenStudyError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Protocol written (retrospective): sha256 {protocol.sha256}")
    return redirect("evaluator:study_dashboard", code=study.code)
