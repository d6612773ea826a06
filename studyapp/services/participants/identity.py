"""Who a participant is: joining behind consent, and resuming in another browser only with proof.

A Prolific id or a panel id is not a secret (it appears in exports, emails and URLs), so it names a
participant but never proves one. A browser is bound to a participant (a signed cookie, set by the view)
only when:
- its own consent form enrols someone new (the form's token is bound to that browser and expires;
  studyapp.forms), or is posted again by that browser (a double click finds whom it enrolled);
- it proves it is the participant behind a known id: for Prolific, the SESSION_ID recorded when they
  joined (a different SESSION_ID is a second attempt, refused); otherwise the resume code shown to them
  at the start (wrong codes are limited per id).
Declining records the refusal and nothing else, not even the id, so declining with someone else's id
can neither change their participant nor keep them out.
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import Enum

from django.db import IntegrityError, transaction
from django.utils.crypto import salted_hmac

from studyapp.models import Participant, Study
from studyapp.services.participants.allocation import condition_for_new_participant, row_lock
from studyapp.services.ratelimit import rate_count, rate_peek

RESUME_MAX_FAILURES = 10  # wrong resume codes per id and window; the code has ~50 bits
RESUME_WINDOW_S = 15 * 60


class StudyNotOpen(Exception):
    pass


@dataclass(frozen=True)
class JoinLink:
    """What the join link says about the visitor (all of it claimed, none of it proven)."""

    external_id: str | None = None  # PROLIFIC_PID or pid
    external_study_id: str = ""
    external_session_id: str = ""  # Prolific's SESSION_ID


class Entry(Enum):
    JOINED = "joined"  # a new participant: consented, or declined (a bare refusal)
    RESUMED = "resumed"  # proven (or this browser's own form): the participant it names
    PROOF_NEEDED = "proof-needed"  # the id is taken: ask for the resume code
    PROOF_WRONG = "proof-wrong"
    PROOF_LOCKED = "proof-locked"  # too many wrong resume codes for this id lately
    SECOND_ATTEMPT = "second-attempt"  # a known Prolific id with another SESSION_ID
    RATE_LIMITED = "rate-limited"  # too many new participants from this address this minute
    CLOSED = "closed"  # the study takes no new participants


@dataclass(frozen=True)
class EntryOutcome:
    entry: Entry
    participant: Participant | None = None


def participant_enter(
    *,
    study: Study,
    enrolment: uuid.UUID,
    consent: bool,
    link: JoinLink,
    resume_code: str = "",
    client_address: str = "",
    user_agent: str = "",
    joins_per_minute: int | None = None,
) -> EntryOutcome:
    """A consent form was posted; its token (checked by the caller) shows it is this browser's, and recent.

    `enrolment` is the random id inside that token. Returns whom to bind the browser to, or why nobody.
    New participants count towards the per-address join limit (`joins_per_minute`, None: no limit).
    """
    found = _existing(study=study, enrolment=enrolment, consent=consent, link=link, resume_code=resume_code)
    if found is not None:
        return found
    if study.status != Study.Status.OPEN:
        return EntryOutcome(Entry.CLOSED)
    if joins_per_minute is not None and not join_rate_allow(study=study, client=client_address,
                                                            per_minute=joins_per_minute):
        return EntryOutcome(Entry.RATE_LIMITED)
    try:
        participant = participant_enrol(
            study=study, enrolment=enrolment, consent=consent, link=link,
            client_hash=client_fingerprint(address=client_address, user_agent=user_agent),
        )
    except IntegrityError:
        # The same form posted twice at once, or the same id enrolled at this moment by another request.
        found = _existing(study=study, enrolment=enrolment, consent=consent, link=link, resume_code=resume_code)
        if found is None:
            raise
        return found
    return EntryOutcome(Entry.JOINED, participant)


def _existing(*, study: Study, enrolment: uuid.UUID, consent: bool, link: JoinLink,
              resume_code: str) -> EntryOutcome | None:
    """The participant this form already enrolled, or the proof check for a known id; None: someone new."""
    own = Participant.objects.select_related("study").filter(study=study, enrolment=enrolment).first()
    if own is not None:
        return EntryOutcome(Entry.RESUMED, own)
    if consent and link.external_id:
        known = Participant.objects.select_related("study").filter(study=study, external_id=link.external_id).first()
        if known is not None:
            return _resume(participant=known, link=link, resume_code=resume_code)
    return None


def participant_enrol(
    *, study: Study, enrolment: uuid.UUID, consent: bool, link: JoinLink = JoinLink(), client_hash: str = ""
) -> Participant:
    """Create a participant with their consent decision. A participant who declines is recorded with
    nothing but the refusal. Raises IntegrityError when the enrolment or the id is taken (by constraint,
    so concurrent requests cannot enrol twice)."""
    if study.status != Study.Status.OPEN:
        raise StudyNotOpen(f"study {study.code} is {study.status}")
    with transaction.atomic():
        return Participant.objects.create(
            study=study,
            enrolment=enrolment,
            external_id=(link.external_id or None) if consent else None,
            external_study_id=link.external_study_id if consent else "",
            external_session_id=link.external_session_id if consent else "",
            consent=Participant.Consent.GIVEN if consent else Participant.Consent.DECLINED,
            condition=condition_for_new_participant(study=study) if consent else None,
            # The declined page says nothing else was recorded: not even where they came from.
            client_hash=client_hash if consent else "",
        )


def _resume(*, participant: Participant, link: JoinLink, resume_code: str) -> EntryOutcome:
    recorded, given = participant.external_session_id, link.external_session_id
    if recorded and given:
        same = secrets.compare_digest(recorded.encode(), given.encode())
        return EntryOutcome(Entry.RESUMED, participant) if same else EntryOutcome(Entry.SECOND_ATTEMPT)
    if not resume_code:
        return EntryOutcome(Entry.PROOF_NEEDED)
    failures_key = "studyapp:resume-failures:" + hashlib.sha256(
        f"{participant.study_id}:{participant.external_id}".encode()).hexdigest()
    # Counting is a read then a write: guesses sent in parallel could all read nine failures and all be checked.
    # Queue them behind a lock on the participant's row.
    with transaction.atomic():
        row_lock(model=Participant, pk=participant.pk)
        if rate_peek(key=failures_key) >= RESUME_MAX_FAILURES:
            return EntryOutcome(Entry.PROOF_LOCKED)
        if participant.resume_code and secrets.compare_digest(_normalise_code(resume_code),
                                                              _normalise_code(participant.resume_code)):
            return EntryOutcome(Entry.RESUMED, participant)
        rate_count(key=failures_key, window_s=RESUME_WINDOW_S)
    return EntryOutcome(Entry.PROOF_WRONG)


def _normalise_code(code: str) -> bytes:
    # People copy codes by hand: case, spaces and dashes do not matter.
    return "".join(ch for ch in code.upper() if ch.isascii() and ch.isalnum()).encode()


def client_fingerprint(*, address: str, user_agent: str) -> str:
    """A keyed hash of where someone joined from, to spot one person joining as several (see
    Participant.client_hash for why it is keyed); empty when nothing is known."""
    if not address and not user_agent:
        return ""
    return salted_hmac("studyapp.participant.client", f"{address}\n{user_agent}", algorithm="sha256").hexdigest()


def join_rate_allow(*, study: Study, client: str, per_minute: int) -> bool:
    """Count one new enrolment from `client`; False once it has made `per_minute` in the current minute.

    Keeps a script from filling a study with junk participants. The counter lives in the database
    cache ("ratelimit"), so the limit holds across web workers and needs no Redis.
    """
    key = f"studyapp:join-rate:{study.code}:{client}"
    # rate_count() is a read then a write: concurrent joins could both read n and both write n + 1,
    # slipping past the limit. Queue the check behind a lock on the study row; the cache table is in the
    # same database, so its read and write run inside this transaction.
    with transaction.atomic():
        row_lock(model=Study, pk=study.pk)
        return rate_count(key=key, window_s=60) <= per_minute
