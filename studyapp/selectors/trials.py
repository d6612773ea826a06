"""The human half of the long trial table (bethgelab model-vs-human style): one row per answer."""

from studyapp.models import IDK, Assignment, Condition, Study

TRIAL_COLUMNS = ["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms", "simulated",
                 "attention_failed", "blur_count", "hidden_ms"]


def human_trials(*, study: Study) -> list[dict]:
    """Answered test trials (attention checks excluded). Subjects and items are named by their public
    codes; the condition is its report name (zero-shot, one-shot, two-shot)."""
    rows = (
        Assignment.objects.filter(participant__study=study, is_attention_check=False, response__isnull=False)
        .order_by("participant_id", "condition__shots", "position")
        .values_list(
            "participant__code", "condition__shots", "item__code", "item__label__name", "response__is_idk",
            "response__choice__name", "response__rt_client_ms", "response__rt_server_ms", "participant__simulated",
            "participant__attention_failed", "response__blur_count", "response__hidden_ms",
        )
    )
    return [
        {
            "subject": f"human-{participant}",
            "subject_kind": "human",
            "condition": Condition.Shots(shots).label,
            "item": str(item),
            "target": target,
            "response": IDK if is_idk else choice,
            # The client's clock measures from image display to click; the server's is the fallback.
            "rt_ms": rt_client if rt_client is not None else rt_server,
            "simulated": simulated,
            "attention_failed": attention_failed,
            # While the trial's clock ran: window blurs and ms the page was hidden (None: not measured).
            "blur_count": blur_count,
            "hidden_ms": hidden_ms,
        }
        for (participant, shots, item, target, is_idk, choice, rt_client, rt_server, simulated, attention_failed,
             blur_count, hidden_ms) in rows
    ]
