"""The bootstrap: vectorised resamples against plain-loop references, the interval level, coverage on simulated studies.

Slow references share only the draws (item and participant weights) with the code under test; every
statistic and every quantile is recomputed here with plain Python over the trial rows.
"""

import importlib
import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

from evaluator.report import (
    ReportInputError,
    bootstrap,
    bootstrap_table2,
    differences_table,
    encode,
    item_table,
    prepare_trials,
    table2,
)
from evaluator.report.bootstrap import ParticipantLayout, RowLayout, WeightSampler, percentile_interval
from evaluator.report.metrics import METRICS
from tests.simulated_studies import Population, simulate_study


def human_rows(enc):
    return [code for code, g in enc.groups.iterrows() if g["subject_kind"] == "human"]


# --------------------------------------------------------------------------- plain-loop references

def loop_table2_row(trials: pd.DataFrame, item_weight: dict, person_weight: dict, *, average: str) -> list[float]:
    """One row's Table 2 fractions for one resample, with plain loops over answers (see bootstrap.py's formulas)."""
    per_class = defaultdict(lambda: defaultdict(float))
    answers_of = defaultdict(list)
    for row in trials.itertuples(index=False):
        answers_of[row.item].append(row)
    for item, answers in answers_of.items():
        v = item_weight.get(item, 0.0)
        if v == 0:
            continue
        target = answers[0].target
        c = per_class[target]
        ws = [person_weight.get(a.subject, 1.0) for a in answers]
        for a, w in zip(answers, ws, strict=True):
            c["n"] += v * w
            c["right"] += v * w * (a.response == a.target)
            c["guess"] += v * w * (a.response != "idk")
        u = sum(ws) / len(ws)
        c["items"] += v * u
        c["mv_full"] += v * u * unique_top_is(Counter(a.response for a in answers), target)
        c["mv_guess"] += v * u * unique_top_is(Counter(a.response for a in answers if a.response != "idk"), target)
    classes = [c for c in per_class.values() if c["items"] > 0]
    if average == "micro":
        total = defaultdict(float)
        for c in classes:
            for key, value in c.items():
                total[key] += value
        classes = [total] if classes else []
    rates = [[c["right"] / c["n"] if c["n"] else math.nan for c in classes],
             [c["mv_full"] / c["items"] for c in classes],
             [c["right"] / c["guess"] if c["guess"] else math.nan for c in classes],
             [c["mv_guess"] / c["items"] for c in classes]]
    return [nanmean(r) for r in rates]


def unique_top_is(counts: Counter, target) -> bool:
    if not counts:
        return False
    top = max(counts.values())
    return [r for r, n in counts.items() if n == top] == [target]


def nanmean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def loop_percentile(values, q):
    """numpy's default (linear) percentile, by hand."""
    values = sorted(v for v in values if not math.isnan(v))
    pos = (len(values) - 1) * q / 100
    lo = math.floor(pos)
    return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (pos - lo)


# --------------------------------------------------------------------------- equality with the references

@pytest.mark.parametrize("average", ["macro", "micro"])
def test_item_resamples_equal_table2_of_the_resampled_trials(study, average):
    enc = encode(study)
    items = item_table(enc)
    rng = np.random.default_rng(3)
    v = WeightSampler(enc).items(rng, 10)
    for code in enc.groups.index:
        fast = RowLayout(enc, items, code).stats(v, None, average=average) * 100
        group = enc.groups.loc[code]
        rows = enc.trials[(enc.trials["subject_kind"] == group["subject_kind"])
                          & (enc.trials["condition"] == group["condition"])]
        if group["subject_kind"] == "model":
            rows = rows[rows["subject"] == group["subject"]]
        for r in range(len(v)):
            copies = [rows[rows["item"] == item].assign(item=f"{item}#{n}")
                      for item, weight in zip(enc.items, v[r], strict=True) for n in range(int(weight))]
            copies = [c for c in copies if len(c)]
            if not copies:
                assert np.isnan(fast[r]).all()
                continue
            slow = table2(pd.concat(copies, ignore_index=True), average=average).iloc[0]
            assert fast[r] == pytest.approx([slow[m] for m in METRICS], abs=1e-9, nan_ok=True)


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_two_way_accuracy_equals_table2_of_the_pigeonhole_resampled_trials(study, average):
    enc = encode(study)
    items = item_table(enc)
    sampler = WeightSampler(enc)
    rng = np.random.default_rng(8)
    v, w = sampler.items(rng, 8), sampler.participants(rng, 8)
    for code in human_rows(enc):
        fast = RowLayout(enc, items, code).stats(v, w, average=average) * 100
        humans = enc.trials[(enc.trials["subject_kind"] == "human")
                            & (enc.trials["condition"] == enc.groups.loc[code, "condition"])]
        for r in range(len(v)):
            iw = dict(zip(enc.items, v[r], strict=True))
            pw = dict(zip(enc.subjects, w[r], strict=True))
            copies = [humans[(humans["item"] == i) & (humans["subject"] == s)].assign(item=f"{i}#{a}", subject=f"{s}#{b}")
                      for i in enc.items for a in range(int(iw[i]))
                      for s in humans["subject"].unique() for b in range(int(pw[s]))]
            copies = [c for c in copies if len(c)]
            if not copies:
                continue
            slow = table2(pd.concat(copies, ignore_index=True), average=average).iloc[0]
            # Accuracies: each answer weighs W_p V_i, which is what copying people and items does.
            assert fast[r][[0, 2]] == pytest.approx([slow["accuracy"], slow["accuracy_on_guesses"]], abs=1e-9,
                                                    nan_ok=True)


@pytest.mark.parametrize("resample", ["two-way", "items"])
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_vectorised_bootstrap_agrees_with_a_plain_loop_bootstrap_on_a_small_table(study, resample, average):
    n = 60
    enc = encode(study)
    boot = bootstrap(enc, average=average, n_resamples=n, resample=resample, seed=21)
    ci = bootstrap_table2(boot).set_index(["subject_kind", "subject", "condition", "metric"])
    # The same draws, in the same order as bootstrap() takes them from its generator.
    sampler, rng = WeightSampler(enc), np.random.default_rng(21)
    v = sampler.items(rng, n)
    w = sampler.participants(rng, n) if resample == "two-way" else np.ones((n, len(enc.subjects)))
    for _, group in enc.groups.iterrows():
        rows = enc.trials[(enc.trials["subject_kind"] == group["subject_kind"])
                          & (enc.trials["condition"] == group["condition"])]
        if group["subject_kind"] == "model":
            rows = rows[rows["subject"] == group["subject"]]
        draws = [loop_table2_row(rows, dict(zip(enc.items, v[r], strict=True)),
                                 dict(zip(enc.subjects, w[r], strict=True)) if group["subject_kind"] == "human"
                                 else {}, average=average) for r in range(n)]
        for k, metric in enumerate(METRICS):
            values = [d[k] for d in draws]
            cell = ci.loc[(group["subject_kind"], group["subject"], group["condition"], metric)]
            if all(math.isnan(x) for x in values):
                assert math.isnan(cell["ci_low"])
                continue
            assert cell["ci_low"] == pytest.approx(loop_percentile(values, 2.5) * 100, abs=1e-9)
            assert cell["ci_high"] == pytest.approx(loop_percentile(values, 97.5) * 100, abs=1e-9)


def test_item_weights_draw_n_minus_1_items_per_class_and_participant_weights_the_number_of_people(study):
    enc = encode(study)
    sampler = WeightSampler(enc)
    rng = np.random.default_rng(0)
    v, w = sampler.items(rng, 50), sampler.participants(rng, 50)
    for cls in range(len(enc.classes)):
        n_c = (enc.item_class == cls).sum()  # Rao-Wu: n_c - 1 draws (one for a single-item class)
        assert (v[:, enc.item_class == cls].sum(axis=1) == max(n_c - 1, 1)).all()
    assert (w[:, sampler.humans].sum(axis=1) == len(sampler.humans)).all()
    models = np.setdiff1d(np.arange(len(enc.subjects)), sampler.humans)
    assert (w[:, models] == 1).all()


@pytest.mark.parametrize("average", ["macro", "micro"])
def test_participant_resamples_equal_table2_of_the_resampled_trials(study, average):
    enc = encode(study)
    layout = ParticipantLayout(enc, 1)  # human one-shot: h1, h2, h3
    rng = np.random.default_rng(5)
    humans = enc.trials[(enc.trials["subject_kind"] == "human") & (enc.trials["condition"] == "one-shot")]
    weights = rng.multinomial(3, [1 / 3] * 3, size=10).astype(float)
    fast = layout.stats(weights, average=average) * 100
    for r, w in enumerate(weights):
        copies = [humans[humans["subject"] == s].assign(subject=f"{s}#{k}")
                  for s, n in zip(layout.subjects, w, strict=True) for k in range(int(n))]
        slow = table2(pd.concat(copies, ignore_index=True), average=average).iloc[0]
        assert fast[r] == pytest.approx([slow[m] for m in METRICS], abs=1e-9, nan_ok=True)


# --------------------------------------------------------------------------- the level of the interval

def binomial_quantile(n: int, p: float, q: float) -> int:
    total = 0.0
    for x in range(n + 1):
        total += math.comb(n, x) * p**x * (1 - p) ** (n - x)
        if total >= q:
            return x
    return n


def test_a_95_percent_interval_has_the_binomial_quantiles_of_a_known_resampling_distribution():
    """A model right on 200 of 400 items of one class: with Rao-Wu's 399 draws, resampled accuracy is exactly
    Binomial(399, 1/2) / 399.

    Its 2.5 % and 97.5 % quantiles are 180/399 and 219/399; a 90 % interval (183/399, 216/399) is 1 pp
    narrower on each side and fails.
    """
    items = [f"i{j}" for j in range(400)]
    trials = pd.DataFrame({"subject": "m", "subject_kind": "model", "condition": "zero-shot", "item": items,
                           "target": "A", "response": ["A" if j < 200 else "B" for j in range(400)], "rt_ms": None})
    ci = bootstrap_table2(trials, n_resamples=20000, seed=7).set_index("metric").loc["accuracy"]
    assert ci["ci_low"] / 100 == pytest.approx(binomial_quantile(399, 0.5, 0.025) / 399, abs=1.01 / 399)
    assert ci["ci_high"] / 100 == pytest.approx(binomial_quantile(399, 0.5, 0.975) / 399, abs=1.01 / 399)


def test_two_way_intervals_cover_the_known_population_values_of_simulated_studies():
    """A small, seeded coverage check (benchmarks/bench_coverage.py runs the 200-study version)."""
    population = Population(n_classes=12)
    truth = population.truth(5)
    model_truth = population.model_truth()
    hits, model_hits, n = Counter(), 0, 30
    for seed in range(n):
        study = simulate_study(population, n_participants=30, items_per_class=10, k=5, seed=seed)
        ci = bootstrap_table2(study.trials(), n_resamples=300, seed=seed)
        human = ci[ci["subject_kind"] == "human"].set_index("metric")
        for metric in METRICS:
            hits[metric] += human.loc[metric, "ci_low"] <= truth[metric] * 100 <= human.loc[metric, "ci_high"]
        model = ci[(ci["subject_kind"] == "model") & (ci["metric"] == "accuracy")].iloc[0]
        model_hits += model["ci_low"] <= model_truth * 100 <= model["ci_high"]
        assert human["resample"].eq("two-way").all()
    for metric in METRICS:
        assert hits[metric] / n >= 0.85, (metric, hits[metric])
    assert model_hits / n >= 0.8


# --------------------------------------------------------------------------- rows, differences, several models

def test_bootstrap_cis_bracket_every_estimate_and_are_reproducible_with_a_seed(study):
    first = bootstrap_table2(study, n_resamples=300, seed=11)
    again = bootstrap_table2(study, n_resamples=300, seed=11)
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == len(table2(study)) * 4
    assert (first["ci_low"] <= first["estimate"] + 1e-9).all()
    assert (first["estimate"] <= first["ci_high"] + 1e-9).all()
    assert set(first["resample"]) == {"two-way"}
    clip_one = first[(first["subject"] == "clip") & (first["condition"] == "one-shot")]
    # Stratified by class: CLIP one-shot is right on every A and B item and wrong on the only C item.
    assert (clip_one["ci_low"] == clip_one["ci_high"]).all()


def test_participant_bootstrap_gives_models_no_spread_and_humans_some(study):
    table = bootstrap_table2(study, n_resamples=200, resample="participants", seed=1)
    models = table[table["subject_kind"] == "model"]
    assert np.allclose(models["ci_low"], models["estimate"]) and np.allclose(models["ci_high"], models["estimate"])
    humans = table[(table["subject_kind"] == "human") & (table["condition"] == "one-shot")]
    assert (humans["ci_high"] - humans["ci_low"]).max() > 0


def test_two_way_intervals_are_wider_than_item_intervals_when_people_differ():
    study = simulate_study(Population(n_classes=10, person_sd=1.5), n_participants=30, items_per_class=10, k=5, seed=4)
    widths = {}
    for unit in ("two-way", "items"):
        ci = bootstrap_table2(study.trials(), n_resamples=400, resample=unit, seed=2)
        row = ci[(ci["subject_kind"] == "human") & (ci["metric"] == "accuracy")].iloc[0]
        widths[unit] = row["ci_high"] - row["ci_low"]
    assert widths["two-way"] > 1.2 * widths["items"]


def test_paired_differences_take_each_row_from_the_same_resamples(study):
    # A copy of CLIP under another name: the difference to it is exactly 0 in every resample.
    clip = study[study["subject"] == "clip"].assign(subject="clip copy")
    trials = prepare_trials(pd.concat([study, clip], ignore_index=True))
    boot = bootstrap(trials, n_resamples=200, seed=3)
    diffs = differences_table(boot)
    t2 = table2(trials).set_index(["subject_kind", "subject", "condition"])
    vs = diffs[(diffs["comparison"] == "human - model") & (diffs["condition"] == "zero-shot")
               & (diffs["versus_subject"] == "clip")].set_index("metric")
    for metric in METRICS:
        expected = t2.loc[("human", "", "zero-shot"), metric] - t2.loc[("model", "clip", "zero-shot"), metric]
        assert vs.loc[metric, "estimate"] == pytest.approx(expected, abs=1e-9)
        assert vs.loc[metric, "ci_low"] <= vs.loc[metric, "estimate"] <= vs.loc[metric, "ci_high"]
    boot_rows = {tuple(boot.enc.groups.loc[c, ["subject", "condition"]]): c for c in boot.point.index}
    same = boot.draws[boot_rows[("clip", "one-shot")]] - boot.draws[boot_rows[("clip copy", "one-shot")]]
    assert np.nanmax(np.abs(same)) == 0
    gain = diffs[(diffs["comparison"] == "gain") & (diffs["subject"] == "humans") & (diffs["condition"] == "one-shot")
                 & (diffs["versus_condition"] == "zero-shot")].set_index("metric")
    expected = t2.loc[("human", "", "one-shot"), "accuracy"] - t2.loc[("human", "", "zero-shot"), "accuracy"]
    assert gain.loc["accuracy", "estimate"] == pytest.approx(expected, abs=1e-9)
    assert {"human - model", "gain"} == set(diffs["comparison"])


def test_every_table_handles_several_model_subjects_in_one_condition(study):
    from evaluator.report import ReportOptions, compute_report

    clip = study[study["subject"] == "clip"]
    probe = clip.assign(subject="run · linear probe (paper)")
    prior = clip.assign(subject="run · zero-shot prior", response=clip["target"])
    trials = pd.concat([study[study["subject"] != "clip"], probe, prior], ignore_index=True)
    result = compute_report(trials, meta={"benchmark": "oxford-pets"}, options=ReportOptions(bootstrap=50))
    names = {"run · linear probe (paper)", "run · zero-shot prior"}
    t = result.tables
    for name in names:
        assert (t["table2"]["subject"] == name).sum() == 2
        assert (t["table2_ci"]["subject"] == name).sum() == 8
        assert f"human-model:{name}" in set(t["consistency"]["pair_kind"])
        assert ((t["differences"]["comparison"] == "human - model") & (t["differences"]["versus_subject"] == name)).sum() == 8
        assert (t["replication"]["subject"] == name).sum() == 4  # both beside the paper's zero-shot CLIP row
        assert name in set(t["mcnemar"]["model"])
    assert "run · zero-shot prior" in result.html


# --------------------------------------------------------------------------- options and their defaults

@pytest.mark.parametrize("resample", ["two-way", "items", "participants"])
def test_a_bootstrap_without_resamples_has_estimates_and_no_interval(study, resample):
    boot = bootstrap(study, n_resamples=0, resample=resample)
    assert all(draws.shape == (0, len(METRICS)) for draws in boot.draws.values())
    ci = bootstrap_table2(boot)
    assert ci["ci_low"].isna().all() and ci["ci_high"].isna().all() and (ci["n_resamples"] == 0).all()
    estimates = ci.pivot_table(index=["subject", "condition"], columns="metric", values="estimate", sort=False)
    t2 = table2(study).set_index(["subject", "condition"])
    pd.testing.assert_frame_equal(estimates[list(METRICS)], t2[list(METRICS)], check_names=False, rtol=0, atol=1e-9)


def test_bootstrap_options_that_make_no_sense_are_refused_with_the_reason(study):
    with pytest.raises(ReportInputError, match=r"^the number of bootstrap resamples must be >= 0$"):
        bootstrap(study, n_resamples=-1)
    with pytest.raises(ReportInputError, match=r"^unknown resample unit 'pigeon' \(use one of: two-way, items, "
                                               r"participants\)$"):
        bootstrap(study, resample="pigeon")
    for projection in ({"participant_draws": 10}, {"class_items": np.array([20, 20, 20])}):
        with pytest.raises(ReportInputError, match=r"^projections need the two-way or items unit$"):
            bootstrap(study, resample="participants", **projection)
        for unit in ("two-way", "items"):
            assert bootstrap(study, n_resamples=5, resample=unit, **projection).n_resamples == 5


def test_the_documented_defaults_are_1000_two_way_resamples_seed_0_and_95_percent():
    # Enough items that another seed moves the bounds (the hand-made fixture has one or two items a class).
    trials = simulate_study(Population(n_classes=4), n_participants=10, items_per_class=6, k=3, seed=0).trials()
    default = bootstrap_table2(trials)
    explicit = bootstrap_table2(trials, average="macro", n_resamples=1000, resample="two-way", seed=0, level=0.95)
    pd.testing.assert_frame_equal(default, explicit)
    assert not default.equals(bootstrap_table2(trials, seed=1))
    assert (default["n_resamples"] == 1000).all() and (default["resample"] == "two-way").all()
    boot = bootstrap(trials)
    assert (boot.n_resamples, boot.resample, boot.level) == (1000, "two-way", 0.95)
    pd.testing.assert_frame_equal(bootstrap_table2(boot), default)


def test_the_seed_and_the_level_reach_the_intervals(study):
    boot = bootstrap(study, n_resamples=200, seed=5)
    ci = bootstrap_table2(study, n_resamples=200, seed=5, level=0.5)
    assert not ci.equals(bootstrap_table2(study, n_resamples=200, seed=6, level=0.5))
    for (code, group), k in [((c, g), k) for c, g in boot.enc.groups.iterrows() for k in range(len(METRICS))]:
        cell = ci[(ci["subject"] == group["subject"]) & (ci["condition"] == group["condition"])
                  & (ci["metric"] == METRICS[k])].iloc[0]
        values = [x for x in boot.draws[code][:, k] if not math.isnan(x)]
        if values:  # a 50 % interval: the quartiles of the resampled values
            assert cell["ci_low"] == pytest.approx(loop_percentile(values, 25) * 100, abs=1e-9)
            assert cell["ci_high"] == pytest.approx(loop_percentile(values, 75) * 100, abs=1e-9)


@pytest.mark.parametrize("resample", ["two-way", "items", "participants"])
def test_a_micro_bootstrap_resamples_the_micro_table2(study, resample):
    micro = table2(study, average="micro")
    boot = bootstrap(study, average="micro", n_resamples=100, resample=resample, seed=1)
    assert np.allclose(boot.point[list(METRICS)].to_numpy() * 100, micro[list(METRICS)].to_numpy(), atol=1e-9)
    ci = bootstrap_table2(study, average="micro", n_resamples=100, resample=resample, seed=1)
    assert np.allclose(ci["estimate"], micro[list(METRICS)].to_numpy().ravel(), atol=1e-9)
    # One person in two-shot: every participant resample is that person, so the interval is the micro value.
    if resample == "participants":
        lone = study[(study["condition"] != "two-shot") | (study["subject"] == "h7")]
        lone_ci = bootstrap_table2(lone, average="micro", n_resamples=20, resample=resample, seed=1)
        row = lone_ci[(lone_ci["subject_kind"] == "human") & (lone_ci["condition"] == "two-shot")]
        assert np.allclose(row["ci_low"], row["estimate"]) and np.allclose(row["ci_high"], row["estimate"])
        # h7: a1, b1, c1 right, a2 wrong -> micro 3/4 (macro: (1/2 + 1 + 1) / 3 = 5/6).
        assert row["estimate"].iloc[0] == pytest.approx(75.0, abs=1e-9)


def test_projecting_to_more_items_a_class_narrows_the_interval_as_one_over_the_root_of_the_draws():
    # A model right on half of 20 items per class: resampled accuracy sd ∝ 1 / sqrt(draws); Rao-Wu draws n_c - 1.
    items = [(f"{c}{j}", c) for c in "AB" for j in range(20)]
    trials = pd.DataFrame({"subject": "m", "subject_kind": "model", "condition": "zero-shot",
                           "item": [i for i, _ in items], "target": [c for _, c in items],
                           "response": [c if int(i[1:]) % 2 else "X" for i, c in items], "rt_ms": None})

    def spread(**projection):
        boot = bootstrap(trials, n_resamples=4000, resample="items", seed=3, **projection)
        return np.std(next(iter(boot.draws.values()))[:, 0])

    ratio = spread(class_items=np.array([77, 77])) / spread()
    assert ratio == pytest.approx(math.sqrt(19 / 76), rel=0.06)


def test_paired_difference_intervals_are_the_percentiles_of_the_resampled_differences(study):
    boot = bootstrap(study, n_resamples=150, seed=4)
    diffs = differences_table(boot)
    codes = {(g["subject"], g["condition"]): c for c, g in boot.enc.groups.iterrows()}
    for row in diffs.itertuples(index=False):
        who = {"humans": ""}.get(row.subject, row.subject), {"humans": ""}.get(row.versus_subject, row.versus_subject)
        a, b = codes[(who[0], row.condition)], codes[(who[1], row.versus_condition)]
        k = METRICS.index(row.metric)
        values = [x for x in boot.draws[a][:, k] - boot.draws[b][:, k] if not math.isnan(x)]
        if values:
            assert row.ci_low == pytest.approx(loop_percentile(values, 2.5) * 100, abs=1e-9)
            assert row.ci_high == pytest.approx(loop_percentile(values, 97.5) * 100, abs=1e-9)


def test_participant_resamples_of_a_sparse_study_equal_table2_of_the_resampled_trials():
    # Zero-shot: h3 never saw class C (the last class); one-shot: a single guess among idk answers;
    # two-shot: nothing but idk.
    rows = [("h1", "zero-shot", "i1", "A", "A"), ("h1", "zero-shot", "i2", "A", "idk"), ("h1", "zero-shot", "i5", "C", "C"),
            ("h2", "zero-shot", "i1", "A", "B"), ("h2", "zero-shot", "i3", "B", "B"), ("h2", "zero-shot", "i4", "B", "idk"),
            ("h3", "zero-shot", "i2", "A", "A"), ("h3", "zero-shot", "i3", "B", "A"),
            ("h1", "one-shot", "i1", "A", "idk"), ("h2", "one-shot", "i1", "A", "A"), ("h3", "one-shot", "i3", "B", "idk"),
            ("h1", "two-shot", "i1", "A", "idk"), ("h2", "two-shot", "i3", "B", "idk")]
    trials = pd.DataFrame(rows, columns=["subject", "condition", "item", "target", "response"]).assign(
        subject_kind="human", rt_ms=1000)
    enc = encode(trials)
    rng = np.random.default_rng(2)
    for code in human_rows(enc):
        layout = ParticipantLayout(enc, code)
        humans = enc.trials[enc.trials["condition"] == enc.groups.loc[code, "condition"]]
        n = len(layout.subjects)
        weights = rng.multinomial(n, [1 / n] * n, size=12).astype(float)
        for average in ("macro", "micro"):
            fast = layout.stats(weights, average=average) * 100
            for r, w in enumerate(weights):
                copies = [humans[humans["subject"] == s].assign(subject=f"{s}#{k}")
                          for s, m in zip(layout.subjects, w, strict=True) for k in range(int(m))]
                slow = table2(pd.concat(copies, ignore_index=True), average=average).iloc[0]
                assert fast[r] == pytest.approx([slow[m] for m in METRICS], abs=1e-9, nan_ok=True)


def test_projecting_to_more_participants_narrows_the_interval_as_one_over_the_root_of_their_number():
    # Ten people answer all 20 items; five are always right, five always wrong. Item weights cancel, so the
    # resampled accuracy is the mean of the drawn people: its spread falls as 1 / sqrt(people drawn).
    trials = pd.DataFrame([(f"h{p}", "human", "zero-shot", f"{c}{j}", c, c if p < 5 else "X", 1000)
                           for p in range(10) for c in "AB" for j in range(10)],
                          columns=["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms"])

    def spread(**projection):
        boot = bootstrap(trials, n_resamples=4000, seed=5, **projection)
        return np.std(next(iter(boot.draws.values()))[:, 0])

    assert spread(participant_draws=40) / spread() == pytest.approx(0.5, rel=0.06)


def test_a_percentile_interval_of_one_value_is_that_value_and_of_none_undefined():
    assert percentile_interval(np.array([0.3, np.nan]), 0.95) == (0.3, 0.3)
    assert all(math.isnan(x) for x in percentile_interval(np.array([np.nan]), 0.95))


def test_item_weights_draw_n_minus_1_items_in_classes_of_several_items():
    # The fixture's classes hold one or two items, where n - 1 and n - 2 both come out as one draw.
    items = [(f"{cls}{i}", cls) for cls, n in (("a", 4), ("b", 3)) for i in range(n)]
    trials = pd.DataFrame([{"subject": "h1", "subject_kind": "human", "condition": "zero-shot", "item": item,
                            "target": cls, "response": cls, "rt_ms": 900.0} for item, cls in items])
    enc = encode(trials)
    sampler = WeightSampler(enc)
    v = sampler.items(np.random.default_rng(1), 20)
    assert sampler.n_draws == 3 + 2
    for cls, n_c in (("a", 4), ("b", 3)):
        code = list(enc.classes).index(cls)
        assert (v[:, enc.item_class == code].sum(axis=1) == n_c - 1).all()


def test_resamples_split_into_chunks_add_up_to_the_number_asked_for(monkeypatch):
    module = importlib.import_module("evaluator.report.bootstrap")  # the package exports a function of that name
    monkeypatch.setattr(module, "_CHUNK_CELLS", 30)
    assert list(module._chunks(10, 10)) == [3, 3, 3, 1]
