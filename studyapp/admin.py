from datetime import timedelta
from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from studyapp.forms import ReturnedIdsForm
from studyapp.frozen import STUDY_FROZEN_COLUMNS, readable_frozen_errors
from studyapp.models import (
    Assignment,
    ClassLabel,
    ClassNameTranslation,
    Condition,
    Dataset,
    FrozenStudyError,
    Item,
    Participant,
    ShotExample,
    Study,
    StudyItem,
)
from studyapp.selectors.studies import study_progress
from studyapp.services.datasets import DatasetImportError, dataset_import
from studyapp.services.images import image_path
from studyapp.services.participants import participant_withdraw, participants_mark_returned
from studyapp.services.studies import StudySetupError, study_close, study_open

# The site is named after the project, not "Django administration". Without the left-hand model list every admin
# list has the whole width (at 1280 px it left the study list 630 px); the index page and breadcrumbs still link
# every model.
admin.site.site_header = "Human vs CLIP"
admin.site.site_title = "Human vs CLIP admin"
admin.site.index_title = "Studies, datasets and model runs"
admin.site.enable_nav_sidebar = False


def _thumb(item: Item, size: int = 64) -> str:
    url = reverse("admin:studyapp_item_image", args=[item.code])
    return format_html('<img src="{}" alt="" style="height:{}px;border-radius:4px">', url, size)


class ImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    path = forms.CharField(max_length=1000, help_text="A folder or CSV file on the server.")
    format = forms.ChoiceField(choices=Dataset.Format.choices)
    images_root = forms.CharField(max_length=1000, required=False, help_text="CSV only: folder filenames are relative to.")
    skip_bad = forms.BooleanField(required=False, help_text="Import what is valid and list what was skipped.")

    def clean_path(self):
        return _within_import_roots(self.cleaned_data["path"])

    def clean_images_root(self):
        return _within_import_roots(self.cleaned_data["images_root"]) if self.cleaned_data["images_root"] else ""


def _within_import_roots(raw: str) -> str:
    """The admin reads files on the server: with ADMIN_IMPORT_ROOTS set, only below those folders
    (symlinks and `..` resolved first, so neither can lead out)."""
    roots = [Path(root).resolve() for root in settings.ADMIN_IMPORT_ROOTS]
    if not roots:
        return raw
    resolved = Path(raw).resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise forms.ValidationError(
            "Imports from the admin are limited to " + ", ".join(str(r) for r in roots) + " (ADMIN_IMPORT_ROOTS)."
        )
    return str(resolved)  # the checked path itself, so a link swapped in afterwards cannot redirect the import


class FrozenRefusalAsMessage:
    """The database refuses changes to what an open or closed study shows (studyapp/frozen.py): show
    its reason on the page the user came from instead of an error page. Nothing was written."""

    def changeform_view(self, request, *args, **kwargs):
        return self._refusal_as_message(request, super().changeform_view, *args, **kwargs)

    def delete_view(self, request, *args, **kwargs):
        return self._refusal_as_message(request, super().delete_view, *args, **kwargs)

    def changelist_view(self, request, *args, **kwargs):  # actions and list edits
        return self._refusal_as_message(request, super().changelist_view, *args, **kwargs)

    def _refusal_as_message(self, request, view, *args, **kwargs):
        try:
            # Its own transaction: Django's deletes run in atomic(savepoint=False), and a refused one must
            # roll back to here, not spoil a transaction around the request.
            with readable_frozen_errors(), transaction.atomic():
                return view(request, *args, **kwargs)
        except FrozenStudyError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


def _used_by_a_running_study(dataset: Dataset | None) -> bool:
    return dataset is not None and dataset.studies.exclude(status=Study.Status.DRAFT).exists()


class ClassLabelInline(admin.TabularInline):
    """Names and prompt names are editable while every study of the dataset is a draft; the index never is
    (it is the column of every model's probabilities)."""

    model = ClassLabel
    fields = ["index", "name", "prompt_name"]
    extra = 0
    ordering = ["index"]

    # Class names are the answer buttons and the model's prompts of every study of the dataset: editable
    # while every study of it is a draft (the database refuses it after, studyapp/frozen.py).
    def get_readonly_fields(self, request, obj=None):
        return self.fields if _used_by_a_running_study(obj) else ["index"]

    # A class added or removed under a draft study would leave its drawn items and shots behind.
    def has_add_permission(self, request, obj=None):
        return obj is None or not obj.studies.exists()

    def has_delete_permission(self, request, obj=None):
        return obj is None or not obj.studies.exists()


@admin.register(Dataset)
class DatasetAdmin(FrozenRefusalAsMessage, admin.ModelAdmin):
    list_display = ["name", "source_format", "n_classes", "n_items", "created_at"]
    readonly_fields = ["code", "source_format", "source_path", "created_at"]
    inlines = [ClassLabelInline]
    change_list_template = "admin/studyapp/dataset/change_list.html"

    @admin.display(description="classes")
    def n_classes(self, obj):
        return obj.classes.count()

    @admin.display(description="images")
    def n_items(self, obj):
        return obj.items.count()

    def get_urls(self):
        return [path("import/", self.admin_site.admin_view(self.import_view), name="studyapp_dataset_import"),
                *super().get_urls()]

    def import_view(self, request):
        # admin_view() only checks is_staff: importing reads files on the server, so it needs the add right.
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                report = dataset_import(
                    name=data["name"], path=Path(data["path"]), fmt=data["format"], skip_bad=data["skip_bad"],
                    images_root=Path(data["images_root"]) if data["images_root"] else None,
                )
            except DatasetImportError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"Imported {report.imported} images into {report.dataset.name!r}.")
                for line in report.notes + report.skipped[:50]:
                    messages.warning(request, line)
                return redirect("admin:studyapp_dataset_change", report.dataset.pk)
        return render(request, "admin/studyapp/dataset/import.html",
                      {**self.admin_site.each_context(request), "form": form, "title": "Import a dataset"})


@admin.register(Item)
class ItemAdmin(FrozenRefusalAsMessage, admin.ModelAdmin):
    list_display = ["thumbnail", "original_filename", "label", "split", "dataset"]
    list_filter = ["dataset", "split"]
    search_fields = ["original_filename", "content_hash"]
    readonly_fields = ["thumbnail", "code", "content_hash", "image", "width", "height", "original_filename"]

    @admin.display(description="image")
    def thumbnail(self, obj):
        return _thumb(obj)

    def get_urls(self):
        return [path("<uuid:code>/image.jpg", self.admin_site.admin_view(self.image_view), name="studyapp_item_image"),
                *super().get_urls()]

    def image_view(self, request, code):
        # Labelled data: staff without the right to view items must not get the images by code either.
        if not self.has_view_permission(request):
            raise PermissionDenied
        item = get_object_or_404(Item, code=code)
        try:
            return FileResponse(image_path(relative_path=item.image).open("rb"), content_type="image/jpeg")
        except FileNotFoundError:
            raise Http404("image file missing from the media store") from None


class ConditionInline(admin.TabularInline):
    model = Condition
    fields = ["shots", "shot_thumbnails"]
    readonly_fields = ["shots", "shot_thumbnails"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="shot examples")
    def shot_thumbnails(self, obj):
        shots = ShotExample.objects.filter(condition=obj).select_related("item", "label").order_by("label__index", "rank")
        if not shots:
            return "no examples (zero-shot)"
        return format_html_join(
            "", '<figure style="display:inline-block;margin:2px;text-align:center;font-size:10px">{}<br>{}</figure>',
            ((_thumb(s.item, 56), s.label.name) for s in shots),
        )


class ClassNameTranslationInline(admin.TabularInline):
    """The class names as this study's participants see them (the study's language); reports and the model's
    prompts keep the dataset's names. Frozen with the study once it is open."""

    model = ClassNameTranslation
    fields = ["label", "name"]
    extra = 0
    verbose_name = "class name shown to participants"
    verbose_name_plural = "class names shown to participants (translations; empty: the dataset's names)"

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        if obj is not None and "label" in formset.form.base_fields:
            formset.form.base_fields["label"].queryset = ClassLabel.objects.filter(dataset_id=obj.dataset_id)
        return formset

    def get_readonly_fields(self, request, obj=None):
        return self.fields if obj is not None and obj.is_frozen else []

    def has_add_permission(self, request, obj=None):
        return obj is not None and not obj.is_frozen and super().has_add_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not (obj is not None and obj.is_frozen) and super().has_delete_permission(request, obj)


class StudyAdminForm(forms.ModelForm):
    completion_url = forms.URLField(required=False, assume_scheme="https", help_text=Study.completion_url.field.help_text)
    return_url = forms.URLField(required=False, assume_scheme="https", help_text=Study.return_url.field.help_text)
    # Three ways, so that "not said" can mean the default (on exactly when a completion URL is set).
    participant_id_required = forms.TypedChoiceField(
        label=Study.participant_id_required.field.verbose_name, required=False, empty_value=None,
        coerce=lambda value: value == "True",
        choices=[("", "Default: yes when a completion URL is set"), ("True", "Yes"), ("False", "No")],
        help_text="A PROLIFIC_PID or pid in the join link, one participant per id; visitors without one get a "
                  "page telling them to use the link from the site that sent them.",
    )

    class Meta:
        model = Study
        exclude = ["status", "opened_at"]

    def clean(self):
        data = super().clean()
        if self.instance.pk is None and not self.errors:
            # A dry run of the set-up: the same checks and messages as the real one, then rolled back.
            from studyapp.services.studies import study_create

            with transaction.atomic():
                try:
                    study_create(**_create_kwargs(data))
                except StudySetupError as exc:
                    raise forms.ValidationError(str(exc)) from None
                finally:
                    transaction.set_rollback(True)
        return data


def _create_kwargs(data: dict) -> dict:
    return {f: v for f, v in data.items() if f != "status"}


_STUDY_PARTICIPANT_FIELDS = [
    "instructions", "consent_text", "language", "completion_url", "return_url", "returns_link",
    "participant_id_required", "repeat_items_across_parts", "reservation_minutes", "practice_trials",
    "attention_check_rate", "attention_threshold", "min_window_width", "min_window_height", "allow_phones",
]


@admin.register(Study)
class StudyAdmin(FrozenRefusalAsMessage, admin.ModelAdmin):
    form = StudyAdminForm
    # Short cells, so the list fits a 1280 px screen (tests/evaluator/test_dashboard_browser.py): the design's long
    # label, the join link and the live counts are on the study page and the dashboard.
    list_display = ["title", "status", "dataset", "design_short", "k_per_item", "n_items", "answers_summary",
                    "pages"]
    list_filter = ["status", "design"]
    readonly_fields = ["code", "seed_note", "join_link", "report_links", "live_counts", "created_at", "opened_at",
                       "returns_link"]
    fieldsets = [
        (None, {"fields": ["title", "dataset", "status", "code", "join_link", "report_links"]}),
        ("Design", {"fields": ["design", "k_per_item", "items_per_participant", "allow_idk", "test_split",
                               "shot_split", "test_items_per_class", "seed", "seed_note"]}),
        ("Participants", {"fields": _STUDY_PARTICIPANT_FIELDS}),
        ("Progress", {"fields": ["live_counts", "created_at", "opened_at"]}),
    ]
    inlines = [ConditionInline, ClassNameTranslationInline]
    actions = ["open_studies", "close_studies"]

    def get_urls(self):
        return [path("<int:pk>/report/", self.admin_site.admin_view(self.report_view), name="studyapp_study_report"),
                path("<int:pk>/returns/", self.admin_site.admin_view(self.returns_view), name="studyapp_study_returns"),
                *super().get_urls()]

    def get_inline_instances(self, request, obj=None):
        # Translations name the classes of the study's dataset: only once the study exists.
        return [i for i in super().get_inline_instances(request, obj)
                if obj is not None or not isinstance(i, ClassNameTranslationInline)]

    def returns_view(self, request, pk):
        """Mark participants returned by pasting or uploading their ids (e.g. Prolific's returned submissions)."""
        if not self.has_change_permission(request):
            raise PermissionDenied  # admin_view() only checks is_staff
        study = get_object_or_404(Study, pk=pk)
        form = ReturnedIdsForm(request.POST or None, request.FILES or None)
        outcome = None
        if request.method == "POST" and form.is_valid():
            outcome = participants_mark_returned(study=study, external_ids=form.cleaned_data["external_ids"])
            form = ReturnedIdsForm()
        return render(request, "admin/studyapp/study/returns.html", {
            **self.admin_site.each_context(request), "form": form, "study": study, "outcome": outcome,
            "title": f"Mark participants returned: {study.title}"})

    @admin.display(description="returned participants")
    def returns_link(self, obj):
        if not obj.pk:
            return "-"
        url = reverse("admin:studyapp_study_returns", args=[obj.pk])
        return format_html('<a href="{}">Mark participants returned (paste or upload Prolific ids)</a>', url)

    def get_queryset(self, request):
        # The list's counts in the one query of the page, not a few per study.
        answered = Assignment.objects.filter(condition__study=OuterRef("pk"), is_attention_check=False,
                                             status=Assignment.Status.ANSWERED)
        return super().get_queryset(request).select_related("dataset").annotate(
            items_count=Subquery(StudyItem.objects.filter(study=OuterRef("pk")).order_by().values("study")
                                 .annotate(n=Count("pk")).values("n")),
            **{f"answers_{shots}": Subquery(answered.filter(condition__shots=shots).order_by()
                                            .values("condition__study").annotate(n=Count("pk")).values("n"))
               for shots in (0, 1, 2)},
        )

    def report_view(self, request, pk):
        # Imported here: the report stack (pandas, plotly) is only needed on this page.
        from evaluator.report import ReportInputError, ReportOptions
        from evaluator.study_reports import study_report_compute

        if not self.has_view_permission(request):
            raise PermissionDenied  # admin_view() only checks is_staff
        study = get_object_or_404(Study, pk=pk)
        options = ReportOptions(
            include_simulated=request.GET.get("include_simulated") == "1",
            include_attention_failed=request.GET.get("include_attention_failed") == "1",
            average="micro" if request.GET.get("average") == "micro" else "macro",
            bootstrap=200, static=False,
        )
        try:
            result = study_report_compute(study=study, options=options)
        except ReportInputError as exc:
            messages.error(request, f"No report yet: {exc}")
            return redirect("admin:studyapp_study_change", pk)
        response = HttpResponse(result.html)
        # The self-contained report carries plotly.js inline; this staff-only page alone allows inline script.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj)) + ["status"]
        if obj and obj.is_frozen:
            fields += [f.name for f in Study._meta.concrete_fields if f.column in STUDY_FROZEN_COLUMNS and f.editable]
        return fields

    def has_delete_permission(self, request, obj=None):
        # The database refuses it too: an open or closed study's answers are the study's record.
        return not (obj and obj.is_frozen) and super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        from studyapp.services.studies import study_create

        created = study_create(**_create_kwargs(form.cleaned_data))
        obj.pk, obj.code = created.pk, created.code
        obj._state.adding = False

    @admin.display(description="what the seed does")
    def seed_note(self, obj):
        return "Draws the test items, the shots and each participant's order."

    @admin.display(description="items")
    def n_items(self, obj):
        return obj.items_count if hasattr(obj, "items_count") else obj.study_items.count()

    @admin.display(description="design", ordering="design")
    def design_short(self, obj):
        return obj.design  # "within" or "between"; the full label is on the study page

    @admin.display(description="answers (0 / 1 / 2 shots)")
    def answers_summary(self, obj):
        wanted = (getattr(obj, "items_count", None) or 0) * obj.k_per_item
        counts = [getattr(obj, f"answers_{shots}", None) or 0 for shots in (0, 1, 2)]
        return format_html('<span title="answers per condition (zero-, one-, two-shot) of k × items = {}">'
                           "{} of {}</span>", wanted, " / ".join(map(str, counts)), wanted)

    @admin.display(description="pages")
    def pages(self, obj):
        return format_html('<span style="white-space:nowrap"><a href="{}">Dashboard</a> · <a href="{}">Report</a></span>',
                           reverse("evaluator:study_dashboard", args=[obj.code]),
                           reverse("admin:studyapp_study_report", args=[obj.pk]))

    @admin.display(description="join link")
    def join_link(self, obj):
        if not obj.pk:
            return "-"
        url = reverse("studyapp:join", args=[obj.code])
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    @admin.display(description="report")
    def report_links(self, obj):
        if not obj.pk:
            return "-"
        url = reverse("admin:studyapp_study_report", args=[obj.pk])
        return format_html('<a href="{}">Report</a> · <a href="{}?include_simulated=1">Report including simulated '
                           'participants</a> · <a href="{}">Dashboard</a> · <a href="{}">Planning</a>{}', url, url,
                           reverse("evaluator:study_dashboard", args=[obj.code]),
                           reverse("evaluator:study_plans", args=[obj.code]),
                           format_html(' · <a href="{}">Protocol (JSON)</a>',
                                       reverse("evaluator:study_protocol", args=[obj.code]))
                           if hasattr(obj, "protocol") else "")

    @admin.display(description="live counts")
    def live_counts(self, obj):
        if not obj.pk:
            return "-"
        rows = study_progress(study=obj)
        return format_html(
            "<table><tr><th>condition</th><th>items</th><th>answers</th><th>items with {} answers</th>"
            "<th>live reservations</th></tr>{}</table>",
            obj.k_per_item,
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                             ((r["condition"], r["items"], r["responses"], r["items_complete"],
                               r["live_reservations"]) for r in rows)),
        )

    @admin.action(description="Open (freezes items, classes and shots)")
    def open_studies(self, request, queryset):
        for study in queryset:
            try:
                study_open(study=study)
                messages.success(request, f"{study.title}: open")
            except StudySetupError as exc:
                messages.error(request, f"{study.title}: {exc}")

    @admin.action(description="Close (no new participants)")
    def close_studies(self, request, queryset):
        for study in queryset:
            study_close(study=study)
        messages.success(request, f"Closed {queryset.count()} study(ies).")


# Participants who joined from the same address and browser (Participant.client_hash) this close together
# look like one person taking part several times.
LOOKALIKE_MINUTES = 10


class LookalikeFilter(admin.SimpleListFilter):
    title = "looks like another participant"
    parameter_name = "lookalike"

    def lookups(self, request, model_admin):
        return [("yes", "Yes (same address and browser within minutes)"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(lookalikes__gt=0)
        if self.value() == "no":
            return queryset.filter(lookalikes=0)
        return queryset


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["code", "study", "external_id", "consent", "condition", "simulated", "attention_failed",
                    "lookalike_count", "created_at", "completed_at", "withdrawn_at"]
    list_filter = [LookalikeFilter, "study", "consent", "simulated", "attention_failed",
                   ("withdrawn_at", admin.EmptyFieldListFilter)]
    actions = ["mark_returned"]
    search_fields = ["external_id", "code"]
    # Not the resume code (it is the participant's proof, for them alone) nor the consent form's enrolment id.
    exclude = ["resume_code", "enrolment"]
    readonly_fields = [f.name for f in Participant._meta.fields if f.name not in ("resume_code", "enrolment")] + [
        "lookalike_count"]

    def get_queryset(self, request):
        window = timedelta(minutes=LOOKALIKE_MINUTES)
        others = Participant.objects.filter(
            study=OuterRef("study"), client_hash=OuterRef("client_hash"),
            created_at__gte=OuterRef("created_at") - window, created_at__lte=OuterRef("created_at") + window,
        ).exclude(pk=OuterRef("pk")).exclude(client_hash="")
        count = others.order_by().values("study").annotate(n=Count("pk")).values("n")
        return super().get_queryset(request).annotate(lookalikes=Coalesce(Subquery(count), 0))

    @admin.display(description="look-alikes", ordering="lookalikes")
    def lookalike_count(self, obj):
        return obj.lookalikes

    def has_add_permission(self, request):
        return False

    @admin.action(description="Mark as returned (frees their places now, keeps their answers)",
                  permissions=["change"])
    def mark_returned(self, request, queryset):
        withdrawn = sum(participant_withdraw(participant=p) for p in queryset)
        messages.success(request, f"Marked {withdrawn} participant(s) returned; the others had finished or left.")
