"""The frozen protocol: what a study registers when it opens, as one canonical JSON document and its sha256.

The document lists everything that decides what people and models see and how the answers are analysed: the
study's frozen settings (every column of studyapp/frozen.py's STUDY_FROZEN_COLUMNS: design, k, trials per
person, seed, splits, "I don't know", texts, ...), the classes with their prompt names, every test item with its
content hash (sha256 of the normalised image), the shot examples of every condition, the attention checks (rate,
threshold and a digest of the pool they are drawn from), the exclusion rules and the report's options. It is
written in the transaction that opens the study, and the database refuses any change to it after
(studyapp/frozen.py), as it refuses any change to what the document describes.

Canonical form: JSON with sorted keys, two-space indent, UTF-8 (non-ASCII kept), "\\n" line ends and a final
newline; the sha256 is of exactly those bytes, which are what the download serves, so `sha256sum` of the
downloaded file gives the registered hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict

from django.db import IntegrityError, transaction

from studyapp.frozen import STUDY_FROZEN_COLUMNS, readable_frozen_errors
from studyapp.models import ClassLabel, ClassNameTranslation, FrozenStudyError, Item, ShotExample, Study, StudyItem, StudyProtocol

PROTOCOL_FORMAT = "humanclip-protocol/1"
# The frozen Study columns that have a section of their own, or that the document names otherwise.
_ELSEWHERE = {"code", "dataset_id", "instructions", "consent_text", "attention_check_rate", "attention_threshold"}
# The sections compared with the database when a report checks its data against the protocol (the rest, e.g.
# the title or the report options, may legitimately differ from the moment the protocol was written).
DATA_SECTIONS = ("dataset", "design", "participant_texts", "classes", "items", "shots", "attention_checks")


def protocol_canonical(document: dict) -> str:
    """The one text of a document whose sha256 is its hash."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def protocol_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode("utf-8")).hexdigest()


def study_protocol_document(*, study: Study) -> dict:
    """The protocol of the study as the database holds it now (frozen once it is open)."""
    from evaluator.report import ReportOptions  # the report stack (pandas, plotly) only when a study opens

    study = Study.objects.select_related("dataset").get(pk=study.pk)
    classes = list(ClassLabel.objects.filter(dataset_id=study.dataset_id).order_by("index")
                   .values_list("index", "name", "prompt_name"))
    # What participants read on the answer cards where the study translates a class name (its language).
    shown_as = dict(ClassNameTranslation.objects.filter(study=study).values_list("label__index", "name"))
    items = sorted((str(code), content_hash, label) for code, content_hash, label in
                   StudyItem.objects.filter(study=study).values_list("item__code", "item__content_hash",
                                                                     "item__label__name"))
    conditions = list(study.conditions.order_by("shots"))
    shots = {c.name: [{"class": label, "rank": rank, "item": str(code), "content_hash": content_hash}
                      for label, rank, code, content_hash in
                      ShotExample.objects.filter(condition=c).order_by("label__index", "rank")
                      .values_list("label__name", "rank", "item__code", "item__content_hash")]
             for c in conditions if c.shots}
    design = {field.name: getattr(study, field.attname) for field in Study._meta.concrete_fields
              if field.column in STUDY_FROZEN_COLUMNS and field.column not in _ELSEWHERE}
    design["conditions"] = [c.name for c in conditions]
    design["capacity_per_condition"] = math.ceil(len(items) * study.k_per_item / study.items_per_participant)
    options = {key: value for key, value in asdict(ReportOptions()).items() if key != "static"}
    return {
        "format": PROTOCOL_FORMAT,
        "study": {"code": str(study.code), "title": study.title,
                  "opened_at": study.opened_at.isoformat() if study.opened_at else None},
        "dataset": {"code": str(study.dataset.code), "name": study.dataset.name},
        "design": design,
        "participant_texts": {"instructions": study.instructions, "consent_text": study.consent_text},
        "classes": [{"index": i, "name": name, "prompt_name": prompt, **({"shown_as": shown_as[i]} if i in shown_as else {})}
                    for i, name, prompt in classes],
        "items": {
            "count": len(items),
            "sha256": _digest([" ".join(row) for row in items]),
            "list": [{"item": code, "content_hash": content_hash, "class": label}
                     for code, content_hash, label in items],
        },
        "shots": shots,
        "attention_checks": _attention_checks(study),
        "exclusions": {
            "simulated": "participants driven by simulate_participants are marked and left out of every report "
                         "unless it says it includes them",
            "attention_failed": f"a participant whose accuracy on the known-answer checks is below "
                                f"{study.attention_threshold:g} is marked attention-failed and left out of every "
                                "report unless it says it includes them" if study.attention_check_rate > 0 else
                                "no attention checks: nobody is marked attention-failed",
            "model_errors": "an item a model could not score (corrupt or changed image) has no model answer",
        },
        "report": {
            "options": options,
            "metrics": ["accuracy", "majority_vote_full", "accuracy_on_guesses", "majority_vote_on_guesses"],
            "definitions": "docs/reports.md (Table 2 of Radford et al. 2021, made precise)",
        },
    }


def _attention_checks(study: Study) -> dict:
    out = {"rate": study.attention_check_rate, "threshold": study.attention_threshold}
    if study.attention_check_rate <= 0:
        return out | {"pool": None}
    # Drawn while the study runs (studyapp/services/participants/allocation.py): the shot split, no shot example.
    pool = sorted(Item.objects.filter(dataset_id=study.dataset_id, split=study.shot_split)
                  .exclude(id__in=ShotExample.objects.filter(condition__study=study).values("item_id"))
                  .values_list("content_hash", flat=True))
    return out | {"pool": {"split": study.shot_split, "excludes": "the study's shot examples", "count": len(pool),
                           "content_hashes_sha256": _digest(pool)}}


def study_protocol_write(*, study: Study, retrospective: bool = False) -> StudyProtocol:
    """Write the protocol of an open or closed study: by study_open, in the transaction that opens it, or later
    (``retrospective``) for a study opened before protocols were recorded. A second write returns the first."""
    with readable_frozen_errors(), transaction.atomic():
        existing = StudyProtocol.objects.filter(study=study).first()
        if existing is not None:
            return existing
        if not Study.objects.get(pk=study.pk).is_frozen:
            raise FrozenStudyError("A protocol is written when the study opens, not for a draft.")
        text = protocol_canonical(study_protocol_document(study=study))
        try:
            with transaction.atomic():
                return StudyProtocol.objects.create(study=study, format=PROTOCOL_FORMAT, document=text,
                                                    sha256=protocol_sha256(text), retrospective=retrospective)
        except IntegrityError:  # a concurrent retrospective write won (one protocol per study)
            existing = StudyProtocol.objects.filter(study=study).first()
            if existing is None:
                raise
            return existing
