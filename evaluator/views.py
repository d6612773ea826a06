"""Staff-only run progress: a JSON endpoint (polled by the page and usable from scripts) and a small page."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from evaluator.selectors import RunNotFound, model_run_get_by_code, model_run_progress


def _run_or_404(code):
    try:
        return model_run_get_by_code(code=code)
    except RunNotFound:
        raise Http404("no such run") from None


@never_cache
def run_progress_json(request, code):
    # A JSON client gets a 403, not the admin login page a redirect would give it.
    if not (request.user.is_active and request.user.is_staff):
        return JsonResponse({"error": "staff only"}, status=403)
    return JsonResponse(model_run_progress(run=_run_or_404(code)))


@never_cache
@staff_member_required
def run_progress_page(request, code):
    run = _run_or_404(code)
    return render(request, "evaluator/run_progress.html", {"run": run, "progress": model_run_progress(run=run)})
