"""Participants, by concern:

- identity: joining behind consent, and resuming in another browser only with proof;
- allocation: the assignment engine (which items, slots, reservations, conditions for newcomers);
- flow: the way through the parts (entering a part allocates it), showing a trial, completion, leaving;
- answers: recording an answer exactly once, only as a value the page offered.

The names below are the package's public interface; the modules import each other in that order
(answers, flow and identity use allocation; nothing imports back).
"""

from studyapp.services.participants.allocation import condition_for_new_participant, items_choose
from studyapp.services.participants.answers import ClientTimings, InvalidChoice, SubmitOutcome, response_submit
from studyapp.services.participants.flow import (
    assignment_next,
    assignment_show,
    participant_allocate_next_step,
    participant_complete,
    participant_start,
    participant_step_after_answer,
    participant_withdraw,
    participants_mark_returned,
)
from studyapp.services.participants.identity import (
    Entry,
    EntryOutcome,
    JoinLink,
    StudyNotOpen,
    client_fingerprint,
    join_rate_allow,
    participant_enrol,
    participant_enter,
)

__all__ = [
    "ClientTimings", "participant_withdraw", "participants_mark_returned",
    "Entry", "EntryOutcome", "InvalidChoice", "JoinLink", "StudyNotOpen", "SubmitOutcome", "assignment_next",
    "assignment_show", "client_fingerprint", "condition_for_new_participant", "items_choose", "join_rate_allow",
    "participant_allocate_next_step", "participant_complete", "participant_enrol", "participant_enter",
    "participant_start", "participant_step_after_answer", "response_submit",
]
