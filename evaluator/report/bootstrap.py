"""Bootstrap CIs for Table 2 in the crossed design (participants x items), and paired differences.

Every resample is a pair of weight vectors: item weights V (how often each item was drawn; drawn with
replacement within each class: n_c - 1 draws for a class of n_c items, Rao & Wu's (1988) correction of the
stratified bootstrap's too-small variance) and participant weights W (how
often each human was drawn). Each unit is drawn once for the whole report, so the rows of one resample
are paired: a human-minus-model difference or a zero- to one-shot gain is taken within each resample and
gets its own percentile interval.

Units (``resample``):

* ``two-way`` (default): human rows resample participants *and* items (Owen's pigeonhole bootstrap, an
  answer (p, i) weighs W_p V_i); model rows resample items. One person's ~20 answers are not independent
  and neither are an item's k answers: the crossed design needs both.
* ``items``: items only (participants held fixed; too narrow for humans when people differ).
* ``participants``: participants only, with every vote recomputed from the resampled answers (the
  earlier unit, kept for comparison; a model row then has no spread).

Formulas, per class c of a row, for one resample (the macro average then takes the mean over classes):

    accuracy             = sum_i V_i sum_p W_p right_pi  /  sum_i V_i sum_p W_p answered_pi
    accuracy on guesses  = sum_i V_i sum_p W_p right_pi  /  sum_i V_i sum_p W_p guessed_pi
    majority votes       = sum_i V_i u_i MV_i  /  sum_i V_i u_i,   u_i = mean of W_p over item i's answerers

MV_i is the item's vote on the original answers. A vote is not recomputed from duplicated answers in
two-way mode: a plurality over answers drawn with replacement is biased towards a tie (bagging changes
the statistic), while the weight u_i still moves an item with the people who answered it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .crossed import CrossedSums
from .metrics import GROUP_KEYS, METRICS, Encoded, _check_average, class_rates, encode, item_table, summarise
from .trials import CONDITIONS, ReportInputError

RESAMPLE_UNITS = ("two-way", "items", "participants")
CI_COLUMNS = (*GROUP_KEYS, "metric", "estimate", "ci_low", "ci_high", "n_resamples", "resample")
DIFFERENCE_COLUMNS = ("comparison", "subject", "condition", "versus_subject", "versus_condition", "metric",
                      "estimate", "ci_low", "ci_high", "n_resamples", "resample")
_CHUNK_CELLS = 4_000_000  # resamples x units per vectorised block: bounds memory at ~32 MB per array


def _enc(trials) -> Encoded:
    return trials if isinstance(trials, Encoded) else encode(trials)


def check_resample(resample: str) -> None:
    if resample not in RESAMPLE_UNITS:
        raise ReportInputError(f"unknown resample unit {resample!r} (use one of: {', '.join(RESAMPLE_UNITS)})")


@dataclass
class Bootstrap:
    """Point values and resampled values (fractions) of every Table 2 row; ``draws[code]`` is resamples x 4."""

    enc: Encoded
    point: pd.DataFrame  # groups joined with METRICS (fractions)
    draws: dict[int, np.ndarray]
    n_resamples: int
    resample: str
    level: float


def bootstrap(trials, *, average: str = "macro", n_resamples: int = 1000, resample: str = "two-way",
              seed: int | None = 0, level: float = 0.95, participant_draws: int | None = None,
              class_items: np.ndarray | None = None) -> Bootstrap:
    """Resample the whole study ``n_resamples`` times and keep every row's values (see the module doc).

    Projection (the study planner's live estimate; two-way and items units): ``participant_draws`` draws that
    many participants instead of as many as there are, ``class_items`` (per class code) draws m_c - 1 items of a
    class instead of n_c - 1 (an m-out-of-n bootstrap: the spread a study of that size would have).
    """
    _check_average(average)
    check_resample(resample)
    if n_resamples < 0:
        raise ReportInputError("the number of bootstrap resamples must be >= 0")
    if resample == "participants" and (participant_draws is not None or class_items is not None):
        raise ReportInputError("projections need the two-way or items unit")
    enc = _enc(trials)
    items = item_table(enc)
    point = summarise(items, enc.groups, average=average)
    rng = np.random.default_rng(seed)
    draws: dict[int, np.ndarray] = {}
    if resample == "participants":
        for code in point.index:
            draws[code] = _participant_draws(enc, code, rng, n_resamples, average) if n_resamples \
                else np.full((0, len(METRICS)), np.nan)
    else:
        rows = {code: RowLayout(enc, items, code) for code in point.index}
        sampler = WeightSampler(enc, class_items=class_items)
        parts: dict[int, list[np.ndarray]] = {code: [] for code in rows}
        width = max(len(enc.items), len(enc.subjects), max((r.width for r in rows.values()), default=1))
        for b in _chunks(n_resamples, width):
            v = sampler.items(rng, b)
            w = sampler.participants(rng, b, n_draws=participant_draws) if resample == "two-way" else None
            for code, row in rows.items():
                parts[code].append(row.stats(v, w if row.is_human else None, average=average))
        for code in rows:
            draws[code] = np.vstack(parts[code]) if parts[code] else np.full((0, len(METRICS)), np.nan)
    return Bootstrap(enc=enc, point=point, draws=draws, n_resamples=n_resamples, resample=resample, level=level)


def bootstrap_table2(trials, *, average: str = "macro", n_resamples: int = 1000, resample: str = "two-way",
                     seed: int | None = 0, level: float = 0.95) -> pd.DataFrame:
    """Percentile bootstrap CIs (percent) for every Table 2 cell, long format (one row per group x metric).

    ``n_resamples=0`` gives NaN bounds. See the module doc for the units and formulas.
    """
    boot = trials if isinstance(trials, Bootstrap) else bootstrap(
        trials, average=average, n_resamples=n_resamples, resample=resample, seed=seed, level=level)
    rows = []
    for code, group in boot.enc.groups.iterrows():  # every group has answers, so a point estimate
        for k, metric in enumerate(METRICS):
            low, high = percentile_interval(boot.draws[code][:, k], boot.level)
            rows.append([*group[list(GROUP_KEYS)], metric, boot.point.loc[code, metric] * 100.0, low * 100.0,
                         high * 100.0, boot.n_resamples, boot.resample])
    return pd.DataFrame(rows, columns=list(CI_COLUMNS))


def differences_table(boot: Bootstrap) -> pd.DataFrame:
    """Paired differences (percentage points) with CIs from the same resamples.

    ``human - model``: per condition, the human row minus each model row of that condition;
    ``gain``: per subject (humans pooled), a later condition minus an earlier one (zero- to one-shot,
    one- to two-shot, zero- to two-shot).
    """
    groups = boot.enc.groups.loc[boot.point.index]
    rows = []

    def add(comparison, a, b):
        estimate = (boot.point.loc[a, list(METRICS)] - boot.point.loc[b, list(METRICS)]).to_numpy(float)
        diff = boot.draws[a] - boot.draws[b]
        for k, metric in enumerate(METRICS):
            low, high = percentile_interval(diff[:, k], boot.level)
            rows.append([comparison, _who(groups.loc[a]), groups.loc[a, "condition"], _who(groups.loc[b]),
                         groups.loc[b, "condition"], metric, estimate[k] * 100.0, low * 100.0, high * 100.0,
                         boot.n_resamples, boot.resample])

    humans = groups[groups["subject_kind"] == "human"]
    models = groups[groups["subject_kind"] == "model"]
    for code, human in humans.iterrows():
        for model_code in models.index[models["condition"] == human["condition"]]:
            add("human - model", code, model_code)
    for (_, _), part in groups.groupby(["subject_kind", "subject"], sort=False):
        by_condition = {row["condition"]: code for code, row in part.iterrows()}
        for i, later in enumerate(CONDITIONS):
            for earlier in CONDITIONS[:i]:
                if later in by_condition and earlier in by_condition:
                    add("gain", by_condition[later], by_condition[earlier])
    return pd.DataFrame(rows, columns=list(DIFFERENCE_COLUMNS))


def _who(group: pd.Series) -> str:
    return "humans" if group["subject_kind"] == "human" else str(group["subject"])


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of the resampled values (NaNs left out)."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


# --------------------------------------------------------------------------- weights

class WeightSampler:
    """Draws item weights (within each class) and human participant weights for the whole trial table."""

    def __init__(self, enc: Encoded, *, class_items: np.ndarray | None = None):
        """``class_items`` (per class code): project to that many items a class (m_c - 1 draws from the n_c present)."""
        order = np.argsort(enc.item_class, kind="stable")
        cls = enc.item_class[order]
        starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]]) if len(cls) else np.zeros(0, int)
        sizes = np.diff(np.r_[starts, len(cls)])
        # Rao & Wu (1988): n_c - 1 draws per class, so that the resampled class mean has the unbiased
        # variance s^2 / n_c instead of (n_c - 1) / n_c of it (10 items a class undercover otherwise).
        planned = sizes if class_items is None else np.maximum(np.asarray(class_items)[cls[starts]], sizes)
        draws = np.maximum(planned - 1, 1)
        self._order = order
        self._slot_start = np.repeat(starts, draws)
        self._slot_size = np.repeat(sizes, draws)
        self.n_draws = int(draws.sum())
        humans = np.unique(enc.subject[(enc.groups["subject_kind"].to_numpy() == "human")[enc.group]])
        self.humans = humans
        self.n_items = len(enc.items)
        self.n_subjects = len(enc.subjects)

    def items(self, rng: np.random.Generator, b: int) -> np.ndarray:
        """resamples x items: draw counts; each of n_c - 1 slots of a class draws uniformly among its items."""
        pick = self._slot_start + (rng.random((b, self.n_draws)) * self._slot_size).astype(np.int64)
        flat = (np.arange(b)[:, None] * self.n_items + self._order[pick]).ravel()
        return np.bincount(flat, minlength=b * self.n_items).reshape(b, self.n_items).astype(float)

    def participants(self, rng: np.random.Generator, b: int, *, n_draws: int | None = None) -> np.ndarray:
        """resamples x subjects: multinomial draw counts of the human subjects (models keep weight 1).

        ``n_draws`` (default: the number of humans) projects to a study of that many participants.
        """
        w = np.ones((b, self.n_subjects))
        if len(self.humans):
            n = len(self.humans) if n_draws is None else int(n_draws)
            w[:, self.humans] = rng.multinomial(n, np.full(len(self.humans), 1 / len(self.humans)), size=b)
        return w


class RowLayout:
    """One Table 2 row (group) arranged for :meth:`stats` on global weights (see the module formulas)."""

    def __init__(self, enc: Encoded, items: pd.DataFrame, code: int):
        part = items[items["_group"] == code]
        self.is_human = enc.groups.loc[code, "subject_kind"] == "human"
        mask = enc.group == code
        self.sums = CrossedSums(
            n_items=len(enc.items), item_codes=enc.items.get_indexer(part["item"].to_numpy()),
            item_class=part["_class"].to_numpy(), subject=enc.subject[mask], item=enc.item[mask],
            answer_values={"right": enc.correct[mask], "guess": enc.guess[mask]},
            item_values={"mv_full": part["mv_full"].to_numpy(), "mv_guess": part["mv_guess"].to_numpy()})
        self.width = self.sums.width

    def stats(self, v: np.ndarray, w: np.ndarray | None, *, average: str) -> np.ndarray:
        """resamples x 4 Table 2 fractions for global item weights ``v`` and subject weights ``w`` (None: all 1)."""
        s = self.sums.sums(v, w)
        return _combine_classes(s["items"], s["answered"], s["right"], s["guess"], s["mv_full"], s["mv_guess"],
                                average=average)


# --------------------------------------------------------------------------- participants only (votes recomputed)

def _participant_draws(enc: Encoded, code: int, rng: np.random.Generator, n_resamples: int,
                       average: str) -> np.ndarray:
    layout = ParticipantLayout(enc, code)
    n = len(layout.subjects)
    p = np.full(n, 1.0 / n)
    out = []
    for b in _chunks(n_resamples, layout.n_answers):
        out.append(layout.stats(rng.multinomial(n, p, size=b).astype(float), average=average))
    return np.vstack(out)


class ParticipantLayout:
    """One group's answers arranged so that Table 2 of a participant resample is a few array operations.

    ``stats(w)`` takes resample weights (resamples × subjects, in the order of ``subjects``:
    how often each subject was drawn) and returns (resamples × 4) fractions in METRICS order.
    """

    def __init__(self, enc: Encoded, code: int):
        mask = enc.group == code
        subject, subject_codes = pd.factorize(enc.subject[mask])
        self.subjects = enc.subjects.to_numpy()[subject_codes]
        self.n_answers = int(mask.sum())
        item_local, item_codes = pd.factorize(enc.item[mask])
        item_cls = enc.item_class[item_codes]
        # Local items sorted by class, so per-class sums are contiguous segments.
        item_order = np.argsort(item_cls, kind="stable")
        rank = np.empty_like(item_order)
        rank[item_order] = np.arange(len(item_order))
        item_local = rank[item_local]
        item_cls = item_cls[item_order]
        cls_local, _ = pd.factorize(item_cls)  # item_cls is sorted, so codes follow class order
        n_classes = int(cls_local.max()) + 1
        self.class_starts = np.flatnonzero(np.r_[True, cls_local[1:] != cls_local[:-1]])

        correct, guess, response = enc.correct[mask], enc.guess[mask], enc.response[mask]
        # Per subject p x class c: answers n_pc, right answers r_pc, guesses g_pc. A resample draws subject p
        # W_p times, so its class sums are one matrix product each (W @ these): n_c = sum_p W_p n_pc, etc.
        key = subject * n_classes + cls_local[item_local]
        size = len(self.subjects) * n_classes
        shape = (len(self.subjects), n_classes)
        self.answers_by_class = np.bincount(key, minlength=size).reshape(shape).astype(float)
        self.right_by_class = np.bincount(key, weights=correct, minlength=size).reshape(shape)
        self.guesses_by_class = np.bincount(key, weights=guess, minlength=size).reshape(shape)
        target = item_cls
        n_codes = enc.idk_code + 1
        self.full = _VoteLayout(item_local, response, subject, target, len(item_cls), n_codes)
        self.guessed = _VoteLayout(item_local[guess], response[guess], subject[guess], target, len(item_cls),
                                   n_codes)

    def stats(self, w: np.ndarray, *, average: str) -> np.ndarray:
        present, mv_full = self.full.votes(w)
        _, mv_guess = self.guessed.votes(w)
        mv_guess &= present  # an item answered only with idk is still an item (and wrong)

        def per_class(x):
            return np.add.reduceat(x.astype(float), self.class_starts, axis=1)

        return _combine_classes(per_class(present), w @ self.answers_by_class, w @ self.right_by_class,
                                w @ self.guesses_by_class, per_class(mv_full), per_class(mv_guess), average=average)


class _VoteLayout:
    """Answers sorted by (item, response) so that weighted vote counts are segment sums."""

    def __init__(self, item, response, subject, target, n_items, n_codes):
        key = item * n_codes + response
        order = np.argsort(key, kind="stable")
        self.subject = subject[order]
        key = key[order]
        self.pair_starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
        pair_key = key[self.pair_starts]
        pair_item = pair_key // n_codes
        self.is_target = (pair_key % n_codes) == target[pair_item]
        self.item_starts = np.flatnonzero(np.r_[True, pair_item[1:] != pair_item[:-1]]) if len(pair_key) \
            else np.zeros(0, int)
        self.pair_seg = np.cumsum(np.r_[False, pair_item[1:] != pair_item[:-1]])  # unused without answers
        self.items_here = pair_item[self.item_starts]
        self.n_items = n_items

    def votes(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item has any weight, unique top answer is the target) per resample × item."""
        present = np.zeros((w.shape[0], self.n_items), dtype=bool)
        correct = np.zeros_like(present)
        if len(self.pair_starts) == 0:
            return present, correct
        # votes[r, pair] = sum of W_p over the answers with that (item, response): the response's weighted count.
        votes = np.add.reduceat(w[:, self.subject], self.pair_starts, axis=1)
        top_votes = np.maximum.reduceat(votes, self.item_starts, axis=1)  # per item: the largest count
        is_top = votes == top_votes[:, self.pair_seg]
        n_top = np.add.reduceat(is_top.astype(np.int64), self.item_starts, axis=1)
        target_on_top = np.add.reduceat((is_top & self.is_target).astype(np.int64), self.item_starts, axis=1)
        # The vote is right when the top count is unique (no tie) and is the target's; no weight: item absent.
        present[:, self.items_here] = top_votes > 0
        correct[:, self.items_here] = (top_votes > 0) & (n_top == 1) & (target_on_top == 1)
        return present, correct


# --------------------------------------------------------------------------- shared

def _combine_classes(n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess, *, average: str) -> np.ndarray:
    """(resamples × classes) sums → (resamples × 4) Table 2 fractions."""
    if average == "micro":
        n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess = (
            x.sum(axis=1, keepdims=True) for x in (n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess))
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = class_rates(n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess)
        # A class absent from a resample, or without guesses, is left out of the mean over classes.
        return np.column_stack([_row_nanmean(r) for r in rates])


def _row_nanmean(x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    count = ok.sum(axis=1)
    total = np.where(ok, x, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _chunks(total: int, width: int):
    step = max(1, min(total, _CHUNK_CELLS // max(width, 1)))
    for start in range(0, total, step):
        yield min(step, total - start)
