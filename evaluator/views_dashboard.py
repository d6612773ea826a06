"""Staff-only study pages: the dashboard (live precision and a stopping rule), planning, the protocol download.

Thin views: parse input, call one selector or service, render. Studies are named by their public code. Each page
needs the staff flag and the right to view studies (the admin's own check for the study pages). The report stack
(pandas, numpy, plotly) is imported by the views that need it, not when the URLs load: every web worker serves
participants and need not carry it (as the admin's report page does, studyapp/admin.py).
"""

from __future__ import annotations

from functools import wraps

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from evaluator.dashboard import study_dashboard
from evaluator.forms import PlanForm, PlanTargetForm, TargetForm
from evaluator.models import StudyPlan
from evaluator.planning_selectors import PlanNotFound, study_plan_get_by_code, study_plan_progress, study_plans
from studyapp.models import FrozenStudyError, Study
from studyapp.selectors.protocol import study_protocol_get
from studyapp.selectors.studies import StudyNotFound, study_get_by_code
from studyapp.services.protocol import study_protocol_write


def study_page(view):
    """Staff who may view studies; the study (by code) as the view's first argument after the request."""

    @never_cache
    @staff_member_required
    @wraps(view)
    def wrapped(request, code, *args, **kwargs):
        if not request.user.has_perm("studyapp.view_study"):
            raise PermissionDenied
        try:
            study = study_get_by_code(code=code)
        except StudyNotFound:
            raise Http404("no such study") from None
        return view(request, study, *args, **kwargs)

    return wrapped


def _context(request, study: Study, title: str, **extra) -> dict:
    # The admin's frame (header, user links, breadcrumbs): these pages belong to the admin.
    return {**admin.site.each_context(request), "title": title, "study": study, **extra}


@study_page
def study_dashboard_page(request, study):
    form = TargetForm(request.GET or None)
    query = request.GET.urlencode()
    return render(request, "evaluator/dashboard.html", _context(
        request, study, f"{study.title}: dashboard", dash=study_dashboard(study=study), form=form,
        precision_url=reverse("evaluator:study_precision", args=[study.code]) + (f"?{query}" if query else "")))


@study_page
def study_precision_fragment(request, study):
    from evaluator.dashboard_precision import live_precision_rows, live_precision_summary, study_live_precision

    result = study_live_precision(study=study, **TargetForm(request.GET or None).values())
    return render(request, "evaluator/_live_precision.html", {
        "study": study, "result": result, "rows": live_precision_rows(result),
        "summary": live_precision_summary(result)})


@study_page
def study_protocol_download(request, study):
    protocol = study_protocol_get(study=study)
    if protocol is None:
        raise Http404("this study has no protocol (a draft, or opened before protocols were recorded)")
    # The registered bytes themselves: sha256sum of the file is the registered hash.
    response = HttpResponse(protocol.document.encode("utf-8"), content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="protocol-{study.code}-{protocol.sha256[:12]}.json"'
    return response


@require_POST
@study_page
def study_protocol_write_view(request, study):
    try:
        protocol = study_protocol_write(study=study, retrospective=True)
    except FrozenStudyError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Protocol written (retrospective): sha256 {protocol.sha256}")
    return redirect("evaluator:study_dashboard", code=study.code)


@study_page
def study_plan_page(request, study):
    from evaluator.report import ReportInputError, paper_conditions
    from evaluator.services.planning import (
        N_RESAMPLES,
        N_STUDIES,
        PlanUnavailable,
        study_design,
        study_plan_request,
    )

    conditions = [c.name for c in study.conditions.order_by("shots")]
    form = PlanForm(request.POST or None, conditions=conditions, allow_idk=study.allow_idk,
                    expected={c.condition: c for c in paper_conditions()}, n_studies=N_STUDIES,
                    n_resamples=N_RESAMPLES)
    if request.method == "POST" and form.is_valid():
        try:
            design = study_design(study=study, accuracy=form.per_condition("accuracy"),
                                  idk_rate=form.per_condition("idk"), model_accuracy=form.per_condition("model"))
            plan = study_plan_request(study=study, design=design, n_studies=form.cleaned_data["n_studies"],
                                      n_resamples=form.cleaned_data["n_resamples"])
        except ReportInputError as exc:
            form.add_error(None, str(exc))
        except PlanUnavailable as exc:
            messages.warning(request, str(exc))
            return redirect("evaluator:study_plans", code=study.code)
        else:
            return redirect("evaluator:study_plan", code=study.code, plan=plan.code)
    return render(request, "evaluator/plan_form.html", _context(
        request, study, f"{study.title}: planning", form=form, plans=study_plans(study=study)))


def _plan_or_404(study, plan_code) -> StudyPlan:
    try:
        return study_plan_get_by_code(study=study, code=plan_code)
    except PlanNotFound:
        raise Http404("no such plan") from None


@study_page
def study_plan_result_page(request, study, plan):
    from evaluator.planning_results import plan_summary, study_plan_table
    from evaluator.report.figures import METRIC_LABELS
    from evaluator.services.planning import design_from_json

    plan = _plan_or_404(study, plan)
    target = PlanTargetForm(request.GET or None)
    progress = study_plan_progress(plan=plan)
    table = None
    if progress["status"] == "done":
        table = study_plan_table(plan=plan, **target.values())
    return render(request, "evaluator/plan_result.html", _context(
        request, study, f"{study.title}: planning", plan=plan, progress=progress, target=target,
        design=design_from_json(plan.design),
        rows=[] if table is None else table.assign(metric=table["metric"].map(METRIC_LABELS))
        .astype(object).where(table.notna(), None).to_dict("records"),
        summary=[] if table is None else plan_summary(table)))


@study_page
def study_plan_progress_json(request, study, plan):
    return JsonResponse(study_plan_progress(plan=_plan_or_404(study, plan)))


@require_POST
@study_page
def study_plan_send_view(request, study, plan):
    from evaluator.services.planning import PlanUnavailable, study_plan_send

    plan = _plan_or_404(study, plan)
    try:
        study_plan_send(plan_id=plan.pk)
    except PlanUnavailable as exc:
        messages.warning(request, str(exc))
    return redirect("evaluator:study_plan", code=study.code, plan=plan.code)
