"""Model scoring runs: a model is just another subject of the study."""

import uuid

from django.db import models
from django.db.models import Q

from studyapp.models import ClassLabel, Condition, Item, Study


class ModelRun(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="model_runs")
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, help_text="The subject name in reports.")
    model_name = models.CharField(max_length=200, blank=True)
    pretrained = models.CharField(max_length=200, blank=True)
    checkpoint = models.CharField(max_length=1000, blank=True)
    is_house_model = models.BooleanField(default=False)
    fingerprint = models.CharField(max_length=200, blank=True)
    fingerprint_info = models.JSONField(default=dict, blank=True)
    templates = models.JSONField(default=list, blank=True)
    prompts = models.JSONField(
        default=list, blank=True, help_text="The exact prompt strings, one list per class in class-index order."
    )
    fewshot_methods = models.JSONField(
        default=list, blank=True, help_text="Few-shot methods scored in one-/two-shot conditions: one subject each."
    )
    fewshot_params = models.JSONField(
        default=dict, blank=True, help_text='Their hyperparameters, e.g. {"linear-probe": {"C": 0.316}}.'
    )
    training_data = models.JSONField(
        default=dict, blank=True, help_text="What the model was trained on, checked against the study's items."
    )
    allow_trained_items = models.BooleanField(
        default=False, help_text="Scored although the model was trained on some of the study's items (marked)."
    )
    condition_shots = models.JSONField(default=list, help_text="Shot counts of the conditions scored.")
    device_request = models.CharField(max_length=40, default="auto", help_text="auto, cpu, cuda, cuda:1 …")
    device = models.CharField(max_length=40, blank=True, help_text="Where the first worker actually ran it.")
    dtype = models.CharField(max_length=40, blank=True)
    versions = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    items_total = models.PositiveIntegerField(default=0, help_text="Predictions wanted: items × conditions.")
    chunk_size = models.PositiveIntegerField(default=0, help_text="Items per scoring chunk (each scored in every condition).")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["study", "name"], name="model_run_name_unique")]

    def __str__(self) -> str:
        return self.name

    def subject(self, method: str) -> str:
        """The subject name in reports of this run's answers with ``method`` ("" in the zero-shot condition)."""
        params = self.fewshot_params.get(method, {})
        if method == "linear-probe":
            return f"{self.name} · linear probe (paper, C={_number(params.get('C'))})"
        if method == "zero-shot-prior":
            return f"{self.name} · zero-shot prior (λ={_number(params.get('lambda'))})"
        return f"{self.name} · {method}" if method else self.name


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, int | float) else "?"


class ModelPrediction(models.Model):
    run = models.ForeignKey(ModelRun, on_delete=models.CASCADE, related_name="predictions")
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="+")
    method = models.CharField(max_length=40, blank=True, help_text="Few-shot method; empty in zero-shot.")
    predicted = models.ForeignKey(ClassLabel, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    probs = models.JSONField(default=list, blank=True, help_text="Probability of every class, by class index.")
    p_target = models.FloatField(null=True, blank=True)
    p_predicted = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why this item could not be scored.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "condition", "item", "method"], name="prediction_unique"),
            models.CheckConstraint(
                condition=Q(predicted__isnull=False) | ~Q(error=""), name="prediction_has_answer_or_error"
            ),
        ]


class ScoringChunk(models.Model):
    """A unit of work for one Celery task: some of the study's items, scored in every condition of the run.

    One chunk covers all conditions so each image is encoded once and its embedding reused by the
    zero-, one- and two-shot classifiers. The row is also the claim: a task may work on a chunk only
    after a conditional update moved it to RUNNING, so duplicate or redelivered messages are harmless.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(ModelRun, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    item_ids = models.JSONField(help_text="Item primary keys in this chunk.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True, help_text="Celery task that holds (or last held) the claim.")
    task_retries = models.PositiveIntegerField(
        default=0, help_text="The claiming task's retry number: a higher one is a retry, not a new attempt."
    )
    worker = models.CharField(max_length=200, blank=True, help_text="node name:pid of the claiming worker.")
    queued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="scoring_chunk_unique")]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"{self.run} #{self.index} ({self.status})"


class WorkerJob(models.Model):
    """What a row that a worker claims and runs has (a plan, a house training): a public code, the status the
    claim moves, the error of a failure, and when it was asked for, queued, started, last heard of and done."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]


class StudyPlan(WorkerJob):
    """A planning simulation of a study's own design (evaluator/services/planning.py): the half-width curve of
    evaluator.report.plan_halfwidths, one grid size at a time, stored so the planning page and `manage.py
    plan_study` reuse it (``key``: the design and simulation settings); plan_study on it is instant."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="plans")
    key = models.CharField(max_length=64, help_text="sha256 of the design and simulation settings.")
    design = models.JSONField(help_text="The StudyDesign simulated, with the conditions' expected values.")
    simulation = models.JSONField(help_text="n_studies, n_resamples, seed.")
    grid = models.JSONField(help_text="Participant numbers per condition simulated, in order.")
    curve_csv = models.TextField(blank=True, help_text="plan_halfwidths' table for the sizes done so far (CSV).")
    steps_done = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=200, blank=True, help_text="Who holds (or last held) the claim.")
    worker = models.CharField(max_length=200, blank=True)

    class Meta(WorkerJob.Meta):
        constraints = [models.UniqueConstraint(fields=["study", "key"], name="study_plan_unique")]

    def __str__(self) -> str:
        return f"plan {self.code} ({self.status})"


class HouseTraining(WorkerJob):
    """Training the house model in a worker (minutes on a CPU), then scoring the studies that asked for it.

    The row is also the claim, as a ScoringChunk's: a task trains only after a conditional update moved the row
    to RUNNING, so a duplicate or redelivered message never trains a second time at once. Requests join the
    pending training (at most one, a database constraint), so studies asked for together share one training.
    """

    then_score = models.JSONField(
        default=list, blank=True,
        help_text='Runs to create once trained: [{"study": pk, …model_run_create options}], in request order.',
    )
    progress = models.FloatField(default=0, help_text="0–1, from the trainer's progress bars.")
    detail = models.CharField(max_length=300, blank=True, help_text="The trainer's latest progress line.")
    checkpoint = models.CharField(max_length=1000, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="node name:pid of the training worker.")

    class Meta(WorkerJob.Meta):
        constraints = [models.UniqueConstraint(fields=["status"], condition=Q(status="pending"),
                                               name="one_pending_house_training")]

    def __str__(self) -> str:
        return f"house model training {self.code} ({self.status})"
