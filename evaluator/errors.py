"""Errors of the evaluator's services (a module of its own so that every service module can raise them)."""


class ScoringSetupError(ValueError):
    """A run cannot be created or resumed as asked; the message says why."""


class TrainedOnStudyItems(ScoringSetupError):
    """The model was trained on some of the study's test items or shots (or that cannot be checked)."""
