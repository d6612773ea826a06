"""Fixtures for the reports module's tests: plain pandas, no Django."""

from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
METRIC_COLUMNS = ["accuracy", "majority_vote_full", "accuracy_on_guesses", "majority_vote_on_guesses"]


@pytest.fixture(autouse=True)
def _media_root():
    """Override tests/conftest.py's Django-settings fixture: the reports module never touches Django."""
    yield


@pytest.fixture
def study_csv() -> Path:
    return FIXTURES / "study_trials.csv"


@pytest.fixture
def study(study_csv):
    from evaluator.report import read_trials_csv

    return read_trials_csv(study_csv)


@pytest.fixture
def consistency_trials():
    from evaluator.report import read_trials_csv

    return read_trials_csv(FIXTURES / "consistency_trials.csv")


@pytest.fixture
def expected_table2():
    """The hand-computed Table 2 of study_trials.csv (fixtures/study_table2_{macro,micro}.csv), in percent.

    The CSVs hold fractions typed in by hand (derivations: test_report_table2.py).
    """

    def load(average: str = "macro") -> pd.DataFrame:
        table = pd.read_csv(FIXTURES / f"study_table2_{average}.csv", dtype=str, keep_default_na=False)
        for col in METRIC_COLUMNS:
            table[col] = [float(Fraction(v)) * 100 for v in table[col]]
        return table

    return load


@pytest.fixture(autouse=True)
def _feature_cache():
    """Override tests/evaluator/conftest.py's Django-settings fixture (the model feature cache): not used here."""
    yield
