"""Admin for model runs: "score a study" (the add form), list with status and progress, cancel and resume."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from evaluator.errors import ScoringSetupError
from evaluator.house import HouseModelNotTrained, house_checkpoint
from evaluator.models import HouseTraining, ModelRun, ScoringChunk
from evaluator.selectors import model_run_progress
from evaluator.services import (
    QueueUnavailable,
    RunExists,
    model_run_cancel,
    model_run_create,
    model_run_resume,
    model_spec_resolve,
)
from evaluator.services.training import house_training_request
from studyapp.models import Condition, Study

# clipmodel.FEW_SHOT_METHODS and DEFAULT_METHODS (the web process imports no torch to draw a form); checked on create
FEW_SHOT_METHODS = (("linear-probe", "linear probe (the paper's baseline)"),
                    ("zero-shot-prior", "zero-shot prior"), ("prototype", "prototype"))
DEFAULT_METHODS = ["linear-probe", "zero-shot-prior"]


class ScoreStudyForm(forms.Form):
    SOURCES = (("house", "House model (trained offline on the shared training splits)"),
               ("pretrained", "open_clip model + pretrained tag"),
               ("checkpoint", "Checkpoint file on the workers' disk"))

    study = forms.ModelChoiceField(queryset=Study.objects.exclude(status=Study.Status.DRAFT).order_by("-created_at"))
    source = forms.ChoiceField(choices=SOURCES, initial="house", widget=forms.RadioSelect)
    model_name = forms.CharField(required=False, help_text="open_clip architecture, e.g. ViT-B-32")
    pretrained = forms.CharField(required=False, help_text="e.g. openai, laion2b_s34b_b79k")
    checkpoint = forms.CharField(required=False, help_text="absolute path, the same on every worker")
    conditions = forms.TypedMultipleChoiceField(
        choices=Condition.Shots.choices, coerce=int, initial=[0, 1, 2], widget=forms.CheckboxSelectMultiple,
        help_text="Only the study's conditions can be scored.",
    )
    fewshot_methods = forms.MultipleChoiceField(
        choices=FEW_SHOT_METHODS, initial=DEFAULT_METHODS, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="One-/two-shot conditions: each method is a subject of its own (default: both of the first two).",
    )
    allow_trained_items = forms.BooleanField(
        required=False, label="Allow trained items",
        help_text="Score even if the model was trained on some of the study's test items or shots; every report "
                  "then marks the run as not a fair test.",
    )
    templates = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}),
                                help_text="One prompt template per line with {} for the class name; "
                                          "empty: the dataset's default templates.")
    name = forms.CharField(required=False, help_text="Subject name in reports; empty: says what the model is.")
    device = forms.CharField(initial="auto", help_text="auto (GPU when the worker has one), cpu, cuda, cuda:1")

    def clean(self):
        data = super().clean()
        try:
            if data.get("source") == "house":
                try:
                    data["spec"] = model_spec_resolve(checkpoint=str(house_checkpoint(train=False)))
                except HouseModelNotTrained:
                    data["spec"] = None  # a worker trains it first (add_view), then creates the run
            else:
                data["spec"] = model_spec_resolve(
                    model_name=data.get("model_name", ""),
                    pretrained=data.get("pretrained", "") if data.get("source") == "pretrained" else "",
                    checkpoint=data.get("checkpoint", "") if data.get("source") == "checkpoint" else "",
                )
        except ScoringSetupError as exc:
            raise ValidationError(str(exc)) from None
        data["template_list"] = [line.strip() for line in data.get("templates", "").splitlines() if line.strip()]
        return data


class ScoringChunkInline(admin.TabularInline):
    model = ScoringChunk
    extra = 0
    can_delete = False
    fields = ("index", "status", "attempts", "worker", "claimed_at", "heartbeat_at", "finished_at", "error")
    readonly_fields = fields
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ModelRun)
class ModelRunAdmin(admin.ModelAdmin):
    list_display = ("name", "study", "status", "progress", "failed_items", "created_at", "progress_page")
    list_filter = ("status",)
    search_fields = ("name", "code", "study__title")
    actions = ("cancel_runs", "resume_runs", "retry_failed_items")
    inlines = (ScoringChunkInline,)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ModelRun._meta.fields] + ["progress", "failed_items", "progress_page"]

    @admin.display(description="progress")
    def progress(self, run):
        p = model_run_progress(run=run)
        eta = f", ETA {p['eta_s']:.0f} s" if p["eta_s"] is not None else ""
        rate = f", {p['rate_items_per_s']:.1f}/s" if p["rate_items_per_s"] else ""
        return f"{p['items_done']}/{p['items_total']} ({p['percent']} %){rate}{eta}"

    @admin.display(description="failed items")
    def failed_items(self, run):
        return run.predictions.filter(predicted__isnull=True).count()

    @admin.display(description="live")
    def progress_page(self, run):
        return format_html('<a href="{}">progress</a>', reverse("evaluator:run_progress", args=[run.code]))

    def add_view(self, request, form_url="", extra_context=None):
        """"Score a study": create the run through the service (chunks queued on commit), then show it."""
        form = ScoreStudyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            if data["spec"] is None:
                return self._train_house_model_first(request, data)
            try:
                run = model_run_create(
                    study=data["study"], spec=data["spec"], name=data["name"], conditions=data["conditions"],
                    templates=data["template_list"] or None, fewshot_methods=data["fewshot_methods"] or None,
                    device=data["device"], allow_trained_items=data["allow_trained_items"],
                )
            except QueueUnavailable as exc:
                messages.warning(request, str(exc))
                return HttpResponseRedirect(reverse("admin:evaluator_modelrun_changelist"))
            except RunExists as exc:
                form.add_error("name", f"{exc}: resume it from the list, or choose another name")
            except ScoringSetupError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Run {run.name!r} queued: {run.items_total} predictions to make.")
                return HttpResponseRedirect(reverse("admin:evaluator_modelrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
            "title": "Score a study", "has_view_permission": True, **(extra_context or {}),
        }
        return TemplateResponse(request, "evaluator/admin/score_study.html", context)

    def _train_house_model_first(self, request, data):
        options = {"name": data["name"], "conditions": data["conditions"], "templates": data["template_list"] or None,
                   "fewshot_methods": data["fewshot_methods"] or None, "device": data["device"],
                   "allow_trained_items": data["allow_trained_items"]}
        try:
            house_training_request(study=data["study"], options=options)
        except QueueUnavailable as exc:
            messages.warning(request, str(exc))
        else:
            messages.success(request, "The house model is not trained yet: a worker trains it (9-30 min on a CPU), "
                                      "then the run appears here.")
        return HttpResponseRedirect(reverse("admin:evaluator_housetraining_changelist"))

    @admin.action(description="Cancel (stops after the chunk being scored)")
    def cancel_runs(self, request, queryset):
        n = sum(model_run_cancel(run=run) for run in queryset)
        self.message_user(request, f"{n} run(s) cancelled.")

    @admin.action(description="Resume (score what is missing)")
    def resume_runs(self, request, queryset):
        self._resume(request, queryset, retry_failed_items=False)

    @admin.action(description="Retry failed items and resume")
    def retry_failed_items(self, request, queryset):
        self._resume(request, queryset, retry_failed_items=True)

    def _resume(self, request, queryset, *, retry_failed_items):
        try:
            chunks = sum(model_run_resume(run=run, retry_failed_items=retry_failed_items) for run in queryset)
        except QueueUnavailable as exc:
            self.message_user(request, str(exc), level=messages.WARNING)
            return
        self.message_user(request, f"{chunks} chunk(s) queued.")


@admin.register(HouseTraining)
class HouseTrainingAdmin(admin.ModelAdmin):
    """Read-only: trainings are requested by "Score a study" (house model) and `manage.py score_study`."""

    list_display = ("code", "status", "percent", "detail", "studies", "created_at", "finished_at")
    list_filter = ("status",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in HouseTraining._meta.fields] + ["percent", "studies"]

    @admin.display(description="progress")
    def percent(self, training):
        return f"{100 * training.progress:.0f} %"

    @admin.display(description="then scores")
    def studies(self, training):
        titles = dict(Study.objects.filter(pk__in=[r["study"] for r in training.then_score]).values_list("pk", "title"))
        return ", ".join(titles.get(r["study"], "(deleted)") for r in training.then_score)

    def has_add_permission(self, request):
        return False
