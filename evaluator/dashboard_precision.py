"""The dashboard's live precision: every Table 2 cell's CI from the report's own two-way bootstrap, and how many
more participants bring it to the researcher's target half-width (evaluator.report.live_precision).

It takes one to a few seconds for an app-size study, so it is cached: an answer less than DASHBOARD_LIVE_CACHE_S
seconds old (default 60) is served as it is, an older one while no answer or finished run came since, and only then
is it computed again (by one request at a time; the others get the previous one meanwhile).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pandas as pd
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Max

from evaluator.models import ModelRun
from evaluator.report import ReportInputError, ReportOptions, live_precision, prepare_trials
from evaluator.report.figures import METRIC_LABELS
from evaluator.study_reports import study_trials
from studyapp.models import Response, Study, StudyItem

LIVE_CACHE_KEY = "evaluator:live-precision:v1:{study}:{target}:{simulated}:{attention}"
LIVE_CACHE_LIFETIME_S = 24 * 3600  # an entry is replaced long before: by a newer answer after the brief window


def _live_cache_s() -> float:
    return settings.DASHBOARD_LIVE_CACHE_S


@dataclass
class LivePrecision:
    """The live precision table (evaluator.report.live_precision's columns) and where it came from."""

    table: pd.DataFrame | None
    target_halfwidth: float
    computed_at: float  # time.time()
    seconds: float  # how long the computation took
    n_answers: int  # human answers in the database when it was computed (all, before exclusions)
    message: str = ""  # why there is no table
    cached: bool = False
    n_resamples: int = field(default=ReportOptions.bootstrap)


def _version(study: Study) -> tuple:
    """What the live precision depends on: the answers (count and newest) and the finished model runs."""
    answers = Response.objects.filter(assignment__participant__study=study,
                                      assignment__is_attention_check=False).aggregate(n=Count("id"), last=Max("id"))
    runs = tuple(ModelRun.objects.filter(study=study, status=ModelRun.Status.DONE).order_by("pk")
                 .values_list("pk", flat=True))
    return answers["n"], answers["last"], runs


def study_live_precision(*, study: Study, target_halfwidth: float = 3.0, include_simulated: bool = False,
                         include_attention_failed: bool = False) -> LivePrecision:
    """Every Table 2 cell with its CI and half-width and the participants that reach ``target_halfwidth``."""
    key = LIVE_CACHE_KEY.format(study=study.code, target=f"{target_halfwidth:g}", simulated=int(include_simulated),
                                attention=int(include_attention_failed))
    version = _version(study)
    entry = cache.get(key)
    # A lock, so that of the requests that find the result out of date one computes it and the others serve the
    # previous one meanwhile (the computation takes seconds; it expires if its request dies).
    locked = cache.add(f"{key}:lock", 1, timeout=300)
    try:
        if entry is not None and (entry["version"] == version or not locked
                                  or time.time() - entry["result"].computed_at < _live_cache_s()):
            entry["result"].cached = True
            return entry["result"]
        result = _compute(study=study, target_halfwidth=target_halfwidth, include_simulated=include_simulated,
                          include_attention_failed=include_attention_failed, n_answers=version[0])
        cache.set(key, {"version": version, "result": result}, timeout=LIVE_CACHE_LIFETIME_S)
        return result
    finally:
        if locked:
            cache.delete(f"{key}:lock")


def _compute(*, study: Study, target_halfwidth: float, include_simulated: bool, include_attention_failed: bool,
             n_answers: int) -> LivePrecision:
    started = time.perf_counter()
    n_resamples = ReportOptions.bootstrap  # the report's own resampling: the same CIs as the report
    empty = LivePrecision(table=None, target_halfwidth=target_halfwidth, computed_at=time.time(), seconds=0.0,
                          n_answers=n_answers, n_resamples=n_resamples)
    trials = study_trials(study=study)
    if trials.empty:
        empty.message = "No answers and no finished model run yet."
        return empty
    humans = trials["subject_kind"] == "human"
    left_out = (trials["simulated"] & (not include_simulated)) | (trials["attention_failed"]
                                                                  & (not include_attention_failed))
    if not (humans & ~left_out).any():
        empty.message = ("No human answers counted yet" + (
            " (simulated or attention-failed participants are left out unless included)" if humans.any() else "")
            + ".")
        return empty
    try:
        kept = prepare_trials(trials, include_simulated=include_simulated,
                              include_attention_failed=include_attention_failed)
        per_class = dict(StudyItem.objects.filter(study=study).values_list("item__label__name")
                         .annotate(n=Count("id")).values_list("item__label__name", "n"))
        table = live_precision(kept, target_halfwidth=target_halfwidth, items_per_class=per_class,
                               k=study.k_per_item, trials_per_person=study.items_per_participant,
                               n_resamples=n_resamples, seed=ReportOptions.seed)
    except ReportInputError as exc:
        empty.message = f"Not enough data yet: {exc}"
        return empty
    return LivePrecision(table=table, target_halfwidth=target_halfwidth, computed_at=time.time(),
                         seconds=time.perf_counter() - started, n_answers=n_answers, n_resamples=n_resamples)


def live_precision_rows(result: LivePrecision) -> list[dict]:
    """The table as rows for the page: per cell the CI, the half-width and what is needed, in words."""
    if result.table is None:
        return []
    rows = []
    for row in result.table.itertuples(index=False):
        if row.reached:
            need = "reached"
        elif row.subject_kind == "model":
            need = "not reached: a model's interval narrows with items only"
        elif math.isnan(row.more_participants):
            need = ("no projection yet (fewer than 4 participants)" if row.n_participants < 4 else
                    "not reachable with these items: more items are needed, not more people")
        else:
            need = f"≈ {int(row.more_participants)} more participants ({int(row.participants_needed)} in all)"
            if not row.within_design:
                need += ": more than the design holds (k answers per item)"
        rows.append({"subject_kind": row.subject_kind, "subject": row.subject, "condition": row.condition,
                     "metric": METRIC_LABELS.get(row.metric, row.metric), "estimate": row.estimate,
                     "ci_low": row.ci_low, "ci_high": row.ci_high,
                     "halfwidth": row.halfwidth, "reached": bool(row.reached), "n_participants": row.n_participants,
                     "capacity": row.capacity, "projected": row.projected_halfwidth_at_capacity, "need": need})
    return rows


def live_precision_summary(result: LivePrecision) -> str:
    """The stopping rule in one sentence: which human cells reached the target, and what the last one needs."""
    if result.table is None:
        return ""
    humans = result.table[result.table["subject_kind"] == "human"]
    reached = int(humans["reached"].sum())
    text = f"{reached} of {len(humans)} human cells have reached ±{result.target_halfwidth:g} points."
    open_cells = humans[~humans["reached"]]
    if open_cells.empty:
        return text + " By this rule the study can stop."
    if open_cells["more_participants"].isna().any():
        return text + " Some cannot be projected yet or cannot reach it with these items (see below)."
    return text + (f" All of them would with ≈ {int(open_cells['more_participants'].max())} more participants per "
                   "condition (the largest need below).")
