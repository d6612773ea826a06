"""The replication view against the paper's Table 2 (shipped), and the prompts table from META."""

import pandas as pd
import pytest

from evaluator.report import (
    PAPER_TABLE2,
    ReportOptions,
    compute_report,
    prompts_table,
    read_reference,
    replication_table,
)
from evaluator.report.metrics import METRICS
from tests.simulated_studies import Population, simulate_study


def test_the_shipped_paper_table_is_table2_of_the_clip_paper():
    paper = read_reference(PAPER_TABLE2).set_index(["subject_kind", "condition"])
    assert list(paper.columns) == ["subject", *METRICS]
    assert paper.loc[("human", "zero-shot"), METRICS].tolist() == [53.7, 57.0, 69.7, 63.9]
    assert paper.loc[("model", "zero-shot"), "subject"] == "CLIP ViT-L/14@336px"
    assert paper.loc[("model", "zero-shot"), METRICS].tolist() == [93.5] * 4
    assert paper.loc[("human", "one-shot"), "accuracy"] == paper.loc[("human", "two-shot"), "accuracy"] == 75.7


def test_each_cell_gives_the_published_value_ours_with_ci_the_difference_and_whether_it_is_inside():
    ci = pd.DataFrame([
        ["human", "", "zero-shot", "accuracy", 50.0, 45.0, 55.0],
        ["human", "", "zero-shot", "majority_vote_full", 60.0, 58.0, 62.0],
        ["model", "ViT-B/32 · zero-shot", "zero-shot", "accuracy", 90.0, 88.0, 92.0],
    ], columns=["subject_kind", "subject", "condition", "metric", "estimate", "ci_low", "ci_high"])
    paper = read_reference(PAPER_TABLE2)
    table = replication_table(paper, ci).set_index(["subject_kind", "condition", "metric"])
    acc = table.loc[("human", "zero-shot", "accuracy")]
    assert (acc["reference"], acc["ours"], acc["reference_in_ci"]) == (53.7, 50.0, True)
    assert acc["difference"] == pytest.approx(-3.7, abs=1e-9)
    assert table.loc[("human", "zero-shot", "majority_vote_full"), "reference_in_ci"] is False  # 57.0 < 58
    model = table.loc[("model", "zero-shot", "accuracy")]
    assert model["subject"] == "ViT-B/32 · zero-shot" and model["reference_subject"] == "CLIP ViT-L/14@336px"
    assert model["reference_in_ci"] is False
    # Cells we have no value for stay in the table, empty.
    assert pd.isna(table.loc[("human", "one-shot", "accuracy"), "ours"])


def test_a_pets_study_gets_the_paper_table_by_default_and_other_benchmarks_do_not():
    study = simulate_study(Population(n_classes=5), n_participants=10, items_per_class=4, k=3, seed=1)
    options = ReportOptions(bootstrap=40)
    pets = compute_report(study.trials(), meta={"benchmark": "oxford-pets"}, options=options)
    assert len(pets.tables["replication"]) == 4 * 4  # four published rows x four metrics
    assert "CLIP ViT-L/14@336px" in pets.html
    other = compute_report(study.trials(), meta={"benchmark": "eurosat"}, options=options)
    assert "replication" not in other.tables and 'id="replication"' not in other.html


def test_a_published_value_from_the_same_population_lies_in_our_interval():
    population = Population(n_classes=10)
    truth = population.truth(5)
    published = pd.DataFrame([["human", "", "zero-shot", *(truth[m] * 100 for m in METRICS)]],
                             columns=["subject_kind", "subject", "condition", *METRICS])
    study = simulate_study(population, n_participants=40, items_per_class=10, k=5, seed=7)
    result = compute_report(study.trials(), options=ReportOptions(bootstrap=300))
    table = replication_table(published, result.tables["table2_ci"])
    assert table["reference_in_ci"].all()
    assert table["difference"].abs().max() < 8


def test_prompts_from_meta_become_one_row_per_prompt_string():
    meta = {"prompts": [{"model": "m1", "class": "forest", "prompts": ["a centered satellite photo of forest."]},
                        {"model": "m1", "class": "river", "prompts": ["a photo of a river.", "river"]}]}
    table = prompts_table(meta)
    assert table.values.tolist() == [["m1", "forest", "a centered satellite photo of forest."],
                                     ["m1", "river", "a photo of a river."], ["m1", "river", "river"]]
    assert prompts_table({}).empty and prompts_table({"prompts": ["a photo of a {}."]}).empty


@pytest.mark.parametrize("bad", ["subject_kind,condition,accuracy,majority_vote_full,accuracy_on_guesses,"
                                 "majority_vote_on_guesses\nrobot,zero-shot,1,2,3,4\n",
                                 "subject_kind,condition,accuracy,majority_vote_full,accuracy_on_guesses,"
                                 "majority_vote_on_guesses\nhuman,zero-shot,1,2,300,4\n"])
def test_a_reference_with_unknown_rows_or_values_is_rejected(tmp_path, bad):
    from evaluator.report import ReportInputError

    path = tmp_path / "ref.csv"
    path.write_text(bad)
    with pytest.raises(ReportInputError):
        read_reference(path)
