"""The study data model.

Invariants live in the database wherever a constraint can express them: one response per
assignment, at most k live assignments per (condition, item) through numbered slots, one shot
example per (condition, class, rank), a participant never twice on the same item in a condition.
Once a study is open its items, classes, shots and design are frozen: the database refuses any change
(triggers from studyapp/frozen.py, whatever writes), and the frozen models' save/delete say so early,
so humans and model provably see the same things.
"""

import secrets
import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

IDK = "idk"


def _new_seed() -> int:
    return secrets.randbelow(2**31)


def _new_completion_code() -> str:
    # 20 hex characters = 80 random bits: unguessable, yet easy to read out and type.
    return secrets.token_hex(10).upper()


# No 0/O, 1/I/L: a code people copy by hand. 10 of 31 symbols = 49.5 bits, and wrong guesses are limited.
RESUME_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def _new_resume_code() -> str:
    code = "".join(secrets.choice(RESUME_CODE_ALPHABET) for _ in range(10))
    return f"{code[:5]}-{code[5:]}"


class FrozenStudyError(ValidationError):
    pass


# The languages participant pages are translated into (studyapp/locale); a study picks one.
PARTICIPANT_LANGUAGES = [("en", "English"), ("ko", "한국어 (Korean)")]


class Dataset(models.Model):
    class Format(models.TextChoices):
        FOLDER = "folder", "Folder per class"
        CSV = "csv", "CSV manifest"
        OXFORD_PETS = "oxford-pets", "Oxford-IIIT Pet layout"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, unique=True)
    source_format = models.CharField(max_length=20, choices=Format.choices)
    source_path = models.CharField(max_length=1000, blank=True, help_text="Admin only.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ClassLabel(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="classes")
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=200, help_text="Shown to participants and in reports.")
    prompt_name = models.CharField(max_length=200, help_text="Put into the model's prompt templates.")

    class Meta:
        ordering = ["dataset", "index"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "index"], name="class_index_unique"),
            models.UniqueConstraint("dataset", Lower("name"), name="class_name_unique_ci"),
            # Reports use the literal answer "idk" for "I don't know".
            models.CheckConstraint(condition=~Q(name__iexact=IDK), name="class_name_not_idk"),
            models.CheckConstraint(condition=~Q(name=""), name="class_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    content_hash = models.CharField(max_length=64, help_text="sha256 of the normalised image.")
    image = models.CharField(max_length=200, help_text="Path under MEDIA_ROOT, named by content hash.")
    split = models.CharField(max_length=40)
    label = models.ForeignKey(ClassLabel, on_delete=models.PROTECT, related_name="items")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    original_filename = models.CharField(max_length=500, help_text="Admin only: it can name the class.")
    source_sha256 = models.CharField(
        max_length=64, blank=True,
        help_text="sha256 of the source file's bytes before re-encoding: compared with the images a model was "
                  "trained on. Empty only for items imported before it was recorded.",
    )

    class Meta:
        ordering = ["dataset", "id"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "content_hash"], name="item_content_unique"),
        ]
        indexes = [models.Index(fields=["dataset", "split", "label"])]

    def __str__(self) -> str:
        return f"{self.content_hash[:12]} ({self.split})"


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        CLOSED = "closed"

    class Design(models.TextChoices):
        BETWEEN = "between", "Between subjects (one condition per participant)"
        WITHIN = "within", "Within subjects (zero → one → two-shot phases)"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="studies")
    title = models.CharField(max_length=200)
    instructions = models.TextField(blank=True)
    consent_text = models.TextField(blank=True)
    design = models.CharField(max_length=10, choices=Design.choices, default=Design.WITHIN)
    k_per_item = models.PositiveSmallIntegerField(default=5, help_text="Answers wanted per item and condition.")
    items_per_participant = models.PositiveIntegerField(default=20, help_text="Trials per condition.")
    allow_idk = models.BooleanField(default=True)
    seed = models.BigIntegerField(default=_new_seed)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    test_split = models.CharField(max_length=40, default="test")
    shot_split = models.CharField(max_length=40, default="train")
    test_items_per_class = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: all.")
    reservation_minutes = models.PositiveIntegerField(default=30)
    attention_check_rate = models.FloatField(default=0.0, help_text="Share of trials that are known-answer checks.")
    attention_threshold = models.FloatField(default=0.5, help_text="Minimum accuracy on checks.")
    completion_url = models.URLField(blank=True, help_text="e.g. Prolific's completion URL.")
    # None until saved: then on for studies with a completion URL (paid through a recruiter, where one
    # person must be one participant), off otherwise, unless the researcher said which.
    participant_id_required = models.BooleanField(
        default=None, verbose_name="participants must arrive with an id",
        help_text="A PROLIFIC_PID or pid in the join link; one participant per id. Default: on when a completion "
                  "URL is set.",
    )
    repeat_items_across_parts = models.BooleanField(
        default=False, verbose_name="the same image may appear again in a later part",
        help_text="Within subjects: off, a person never sees a test image in two parts (no familiarity carried "
                  "between parts); on, allocation ignores earlier parts, so within-person gains can be measured.",
    )
    language = models.CharField(
        max_length=8, choices=PARTICIPANT_LANGUAGES, default="en",
        help_text="The language of every participant page. Class names can be translated per study below; "
                  "the model's prompt names are not affected.",
    )
    min_window_width = models.PositiveSmallIntegerField(
        default=0, help_text="Pixels; 0: any. Smaller browser windows get a page saying so before consent.")
    min_window_height = models.PositiveSmallIntegerField(default=0, help_text="Pixels; 0: any.")
    allow_phones = models.BooleanField(default=True, help_text="Off: phones get a page saying so before consent.")
    practice_trials = models.PositiveSmallIntegerField(
        default=0, help_text="Practice images (from the shot split, never a test item) with feedback before the "
                             "first part; not stored as data. 0: no practice.")
    return_url = models.URLField(
        blank=True, help_text="Where a participant who stops is sent (e.g. Prolific's page for returning a study).")
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(condition=Q(k_per_item__gte=1), name="study_k_positive"),
            models.CheckConstraint(condition=Q(items_per_participant__gte=1), name="study_items_positive"),
            models.CheckConstraint(
                condition=Q(attention_check_rate__gte=0) & Q(attention_check_rate__lt=1), name="study_check_rate"
            ),
            models.CheckConstraint(
                condition=Q(attention_threshold__gte=0) & Q(attention_threshold__lte=1), name="study_threshold"
            ),
            models.CheckConstraint(condition=~Q(test_split=models.F("shot_split")), name="study_splits_disjoint"),
            models.CheckConstraint(condition=Q(practice_trials__lte=50), name="study_practice_range"),
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        if self.participant_id_required is None:
            self.participant_id_required = bool(self.completion_url)
        super().save(*args, **kwargs)

    @property
    def is_frozen(self) -> bool:
        return self.status != self.Status.DRAFT


class _FrozenWithStudy(models.Model):
    """Rows that define what participants and models see: immutable once the study is open."""

    class Meta:
        abstract = True

    def _study(self) -> Study:
        raise NotImplementedError

    def _check_not_frozen(self) -> None:
        study = Study.objects.only("status").get(pk=self._study().pk)
        if study.is_frozen:
            raise FrozenStudyError(f"Study {study.pk} is {study.status}: its items, classes and shots are frozen.")

    def save(self, *args, **kwargs):
        self._check_not_frozen()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._check_not_frozen()
        return super().delete(*args, **kwargs)


class ClassNameTranslation(_FrozenWithStudy):
    """A class's name as one study shows it to participants (in the study's language). Reports and the model's
    prompts keep the dataset's names; only the answer cards change."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="class_names")
    label = models.ForeignKey(ClassLabel, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "label"], name="class_name_translation_unique"),
            models.CheckConstraint(condition=~Q(name=""), name="class_name_translation_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name

    def _study(self) -> Study:
        return self.study


class StudyItem(_FrozenWithStudy):
    """A test item of the study: what humans label and models score."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="study_items")
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "item"], name="study_item_unique")]

    def _study(self) -> Study:
        return self.study


class Condition(_FrozenWithStudy):
    class Shots(models.IntegerChoices):
        ZERO = 0, "zero-shot"
        ONE = 1, "one-shot"
        TWO = 2, "two-shot"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conditions")
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    shots = models.PositiveSmallIntegerField(choices=Shots.choices)

    class Meta:
        ordering = ["study", "shots"]
        constraints = [
            models.UniqueConstraint(fields=["study", "shots"], name="condition_unique"),
            models.CheckConstraint(condition=Q(shots__lte=2), name="condition_shots_range"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return self.Shots(self.shots).label

    def _study(self) -> Study:
        return self.study


class ShotExample(_FrozenWithStudy):
    """An example image shown with its class name in a one- or two-shot condition."""

    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="shot_examples")
    label = models.ForeignKey(ClassLabel, on_delete=models.PROTECT, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="+")
    rank = models.PositiveSmallIntegerField()
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["condition", "label__index", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["condition", "label", "rank"], name="shot_rank_unique"),
            models.UniqueConstraint(fields=["condition", "item"], name="shot_item_unique"),
            models.CheckConstraint(condition=Q(rank__lte=1), name="shot_rank_range"),
        ]

    def _study(self) -> Study:
        return self.condition.study


class Participant(models.Model):
    class Consent(models.TextChoices):
        PENDING = "pending"
        GIVEN = "given"
        DECLINED = "declined"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    external_id = models.CharField(max_length=200, null=True, blank=True)
    external_study_id = models.CharField(max_length=200, blank=True)
    external_session_id = models.CharField(max_length=200, blank=True)
    consent = models.CharField(max_length=10, choices=Consent.choices, default=Consent.PENDING)
    condition = models.ForeignKey(
        Condition, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Between-subjects design: the participant's one condition.",
    )
    seed = models.BigIntegerField(default=_new_seed)
    # Phases (conditions in shot order) whose trials have been allocated. Bumped by a
    # compare-and-set, so a phase's batch is allocated once even when two tabs ask at once,
    # and never decreases, so a participant cannot be sent back to an earlier phase.
    phases_entered = models.PositiveSmallIntegerField(default=0)
    simulated = models.BooleanField(default=False)
    attention_failed = models.BooleanField(default=False)
    completion_code = models.CharField(max_length=32, default=_new_completion_code, unique=True, editable=False)
    # The consent form that enrolled them (its signed, browser-bound token carries this random id): a
    # repeated post of that form from that browser finds them instead of enrolling someone new.
    enrolment = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    # Shown at the start to participants with an id: proof that lets them resume in another browser.
    resume_code = models.CharField(max_length=16, default=_new_resume_code, editable=False)
    # A keyed hash of the address and user agent they joined from, so the admin can show participants
    # that look like one person: keyed (not a bare sha256, which the 2^32 IPv4 addresses would undo in
    # seconds) because an address is personal data the consent text does not ask for.
    client_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Stopped and left ("returned" on Prolific): their live reservations were freed at once, answers kept.
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["study", "client_hash", "created_at"], name="participant_lookalike")]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"], condition=Q(external_id__isnull=False), name="participant_external_unique"
            ),
            models.CheckConstraint(condition=Q(phases_entered__lte=3), name="participant_phases_range"),
        ]

    def __str__(self) -> str:
        return str(self.code)


class Assignment(models.Model):
    """One trial: an item reserved for a participant in a condition.

    `slot` numbers the k answers an item may receive in a condition; the partial unique constraint
    on live slots is what makes "never above k" hold under any concurrency. Attention checks take
    no slot.
    """

    class Status(models.TextChoices):
        RESERVED = "reserved"
        ANSWERED = "answered"
        EXPIRED = "expired"

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="assignments")
    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="assignments")
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="+")
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    position = models.PositiveIntegerField()
    slot = models.PositiveSmallIntegerField(null=True, blank=True)
    is_attention_check = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RESERVED)
    reserved_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    shown_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["participant", "condition__shots", "position"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "condition", "item"], name="assignment_no_repeat"),
            models.UniqueConstraint(fields=["participant", "condition", "position"], name="assignment_position_unique"),
            models.UniqueConstraint(
                fields=["condition", "item", "slot"],
                condition=~Q(status="expired") & Q(slot__isnull=False),
                name="assignment_live_slot_unique",
            ),
            models.CheckConstraint(
                condition=Q(is_attention_check=True, slot__isnull=True) | Q(is_attention_check=False, slot__isnull=False),
                name="assignment_slot_iff_test_item",
            ),
        ]
        indexes = [models.Index(fields=["condition", "item", "status"])]


class Response(models.Model):
    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="response")
    choice = models.ForeignKey(ClassLabel, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    is_idk = models.BooleanField(default=False)
    # Client clock (performance.now(), ms since the page's navigation started): the trial page waits until the
    # photo and every example photo are decoded (images_ready_ms), shows them, and starts the response clock at
    # the next animation frame (clock_start_ms), so clock_start_ms >= images_ready_ms. rt_client_ms runs from
    # clock_start_ms to the click; rt_server_ms from the page's first delivery to the answer's arrival.
    rt_client_ms = models.PositiveIntegerField(null=True, blank=True)
    rt_server_ms = models.PositiveIntegerField(null=True, blank=True)
    images_ready_ms = models.PositiveIntegerField(null=True, blank=True)
    clock_start_ms = models.PositiveIntegerField(null=True, blank=True)
    # Attention while the clock ran: window blurs (tab switches, other windows) and time the page was hidden.
    blur_count = models.PositiveIntegerField(null=True, blank=True)
    hidden_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(is_idk=True, choice__isnull=True) | Q(is_idk=False, choice__isnull=False),
                name="response_choice_xor_idk",
            ),
        ]


class StudyProtocol(models.Model):
    """The study's protocol, registered when it opens (studyapp/services/protocol.py): one canonical JSON document
    and the sha256 of its bytes, suitable for pre-registration. Written in the transaction that opens the study;
    the database refuses any change or deletion after (studyapp/frozen.py), and so do save() and delete()."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="protocol")
    format = models.CharField(max_length=40, help_text="The document's format and version.")
    document = models.TextField(help_text="The canonical JSON text; sha256 is of its UTF-8 bytes.")
    sha256 = models.CharField(max_length=64)
    retrospective = models.BooleanField(
        default=False, help_text="Written after the study opened (it opened before protocols were recorded); what "
                                 "it lists was frozen at opening, but the document is not the one of that moment.")
    written_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"protocol sha256:{self.sha256[:12]}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise FrozenStudyError("A study's protocol is written when it opens and never changes.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise FrozenStudyError("A study's protocol is written when it opens and never changes.")
