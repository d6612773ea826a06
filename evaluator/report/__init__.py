"""Reports for the human-vs-CLIP study: trial DataFrame in, tables (DataFrames) out; figures and files separate.

Pure Python on pandas/numpy/plotly — no Django. The Django side calls :func:`build_report`
(or :func:`compute_report` to keep everything in memory); the CLI is ``python -m evaluator.report``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from . import figures as _fig
from . import figures_beyond as _fig_beyond
from .abstention import risk_coverage
from .alignment import alignment, soft_labels, weighted_spearman
from .combination import combination
from .export import ReportExportError, export_figures, find_browser
from .html import render_html
from .live import live_precision
from .metrics import AVERAGES, Encoded, confusion, encode, item_table, per_class, table2
from .planning import ConditionPlan, StudyDesign, paper_conditions, plan_halfwidths, plan_study
from .probabilities import (
    PROBABILITY_TABLE_COLUMNS,
    ModelProbabilities,
    read_probabilities_csv,
    validate_probabilities,
)
from .replication import PAPER_TABLE2, prompts_table, read_reference, reference_for, replication_table
from .stats import (
    RESAMPLE_UNITS,
    bootstrap,
    bootstrap_table2,
    calibration,
    consistency_table,
    differences_table,
    error_consistency,
    expected_calibration_error,
    fleiss_kappa,
    fleiss_table,
    idk_gain,
    mcnemar_exact,
    mcnemar_table,
    reliability_bins,
    response_times,
)
from .trials import (
    ATTENTION_UNITS,
    CONDITIONS,
    IDK,
    KINDS,
    PREPARED_ATTR,
    REQUIRED_COLUMNS,
    ReportInputError,
    exclude_inattentive,
    exclude_participants,
    exclusion_counts,
    prepare_trials,
    read_trials_csv,
    validate_trials,
)


@dataclass(frozen=True)
class ReportOptions:
    """How to compute the report; the CLI flags map one to one."""

    average: str = "macro"
    include_simulated: bool = False
    include_attention_failed: bool = False
    bootstrap: int = 1000
    resample: str = "two-way"
    seed: int | None = 0
    static: bool = True
    reference: str | None = None  # a published Table 2 (table2.csv shape); None: the paper's for meta benchmark
    beyond_paper: bool = True  # risk-coverage, soft labels and alignment, people + model combination
    combination_folds: int = 5
    # Attention per trial (off by default): leave out answers (or, unit "participant", whole participants) with
    # more window blurs or more ms hidden during the trial than these limits. Stated in the header when on.
    max_blur_count: int | None = None
    max_hidden_ms: int | None = None
    attention_unit: str = "trial"

    def check(self) -> None:
        if self.average not in AVERAGES:
            raise ReportInputError(f"unknown average {self.average!r} (use one of: {', '.join(AVERAGES)})")
        if self.resample not in RESAMPLE_UNITS:
            raise ReportInputError(f"unknown resample unit {self.resample!r} (use one of: {', '.join(RESAMPLE_UNITS)})")
        if int(self.bootstrap) < 0:
            raise ReportInputError("--bootstrap must be >= 0")
        if int(self.combination_folds) < 2:
            raise ReportInputError("--combination-folds must be >= 2")
        if self.attention_unit not in ATTENTION_UNITS:
            raise ReportInputError(f"unknown attention unit {self.attention_unit!r} (use one of: "
                                   f"{', '.join(ATTENTION_UNITS)})")
        for name in ("max_blur_count", "max_hidden_ms"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ReportInputError(f"--{name.replace('_', '-')} must be >= 0")


@dataclass
class ReportResult:
    """Everything a report consists of; ``files`` is empty until :func:`build_report` wrote them."""

    tables: dict[str, pd.DataFrame]
    figures: dict[str, object]
    counts: dict[str, int]
    html: str
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)


def compute_tables(trials: pd.DataFrame, *, options: ReportOptions = ReportOptions(),
                   meta: Mapping | None = None, probabilities: pd.DataFrame | None = None) -> tuple[dict, dict]:
    """All report tables (name → DataFrame) and the header counts, without figures or files.

    ``replication`` is there when a reference table applies (options.reference, or the paper's Table 2
    when meta["benchmark"] is "oxford-pets"); ``prompts`` when meta lists them. ``probabilities``: the
    optional long table of the models' probability vectors (subject, condition, item, class, p), checked
    against the trials; the beyond-the-paper tables (risk_coverage, risk_coverage_curve, soft_labels,
    alignment, combination) are there unless options.beyond_paper is False.
    """
    options.check()
    meta = meta or {}
    reference, _ = reference_for(options.reference, meta)
    validated = validate_trials(trials)
    kept = exclude_participants(validated, include_simulated=options.include_simulated,
                                include_attention_failed=options.include_attention_failed)
    kept, inattentive = exclude_inattentive(kept, max_blur_count=options.max_blur_count,
                                            max_hidden_ms=options.max_hidden_ms, unit=options.attention_unit)
    kept.attrs[PREPARED_ATTR] = True
    enc = encode(kept)
    vectors = validate_probabilities(probabilities, enc)
    classes = per_class(enc)
    cal_summary, cal_bins = calibration(enc)
    boot = bootstrap(enc, average=options.average, n_resamples=int(options.bootstrap), resample=options.resample,
                     seed=options.seed)
    tables = {
        "table2": table2(enc, average=options.average),
        "table2_ci": bootstrap_table2(boot),
        "differences": differences_table(boot),
        "per_class": classes,
        "per_class_ranking": _fig.per_class_ranking(classes),
        "consistency": consistency_table(enc, n_resamples=int(options.bootstrap), seed=options.seed),
        "mcnemar": mcnemar_table(enc),
        "fleiss": fleiss_table(enc),
        "idk_gain": idk_gain(enc),
        "response_times": response_times(enc),
        "calibration": cal_summary,
        "calibration_bins": cal_bins,
        "confusion": confusion(enc),
    }
    if options.beyond_paper:
        tables.update(beyond_paper_tables(enc, vectors, options=options))
    if reference is not None:
        tables["replication"] = replication_table(reference, tables["table2_ci"])
    prompts = prompts_table(meta)
    if not prompts.empty:
        tables["prompts"] = prompts
    counts = {**_counts(validated, kept), **inattentive}
    counts["n_probability_vectors"] = sum(len(items) for items, _ in vectors.vectors.values())
    return tables, counts


def beyond_paper_tables(enc: Encoded, vectors: ModelProbabilities, *, options: ReportOptions) -> dict:
    """Risk-coverage, soft labels and alignment, and the people + model combination (docs/reports.md)."""
    n, seed = int(options.bootstrap), options.seed
    summary, curve = risk_coverage(enc, probabilities=vectors, average=options.average, n_resamples=n, seed=seed)
    return {
        "risk_coverage": summary,
        "risk_coverage_curve": curve,
        "soft_labels": soft_labels(enc),
        "alignment": alignment(enc, probabilities=vectors, n_resamples=n, seed=seed),
        "combination": combination(enc, probabilities=vectors, average=options.average,
                                   folds=int(options.combination_folds), n_resamples=n, seed=seed),
    }


def make_figures(tables: Mapping[str, pd.DataFrame]) -> dict[str, object]:
    """Plotly figures from the tables, in report order."""
    figs = {"table2": _fig.table2_figure(tables["table2"], tables.get("table2_ci"))}
    if not tables["per_class_ranking"].empty:
        figs["per_class"] = _fig.per_class_figure(tables["per_class_ranking"])
    if not tables["consistency"].empty:
        figs["consistency"] = _fig.consistency_figure(tables["consistency"])
    if not tables.get("risk_coverage_curve", pd.DataFrame()).empty or not tables.get("risk_coverage",
                                                                                    pd.DataFrame()).empty:
        figs["risk_coverage"] = _fig_beyond.risk_coverage_figure(tables["risk_coverage_curve"], tables["risk_coverage"])
    if not tables.get("alignment", pd.DataFrame()).empty:
        aligned = _fig_beyond.alignment_figure(tables["per_class"], tables["alignment"])
        if aligned is not None:
            figs["alignment"] = aligned
    if not tables.get("combination", pd.DataFrame()).empty:
        figs["combination"] = _fig_beyond.combination_figure(tables["combination"])
    if not tables["response_times"].empty:
        figs["response_times"] = _fig.rt_figure(tables["response_times"])
    if not tables["calibration_bins"].empty:
        figs["calibration"] = _fig.calibration_figure(tables["calibration_bins"], tables["calibration"])
    figs.update(_fig.confusion_figures(tables["confusion"]))
    return figs


def compute_report(trials: pd.DataFrame, *, meta: Mapping | None = None,
                   options: ReportOptions = ReportOptions(), probabilities: pd.DataFrame | None = None) -> ReportResult:
    """Tables, figures and the HTML page in memory; nothing is written."""
    tables, counts = compute_tables(trials, options=options, meta=meta, probabilities=probabilities)
    figs = make_figures(tables)
    page = render_html(meta=dict(meta or {}), counts=counts, options=asdict(options), tables=tables, figures=figs)
    return ReportResult(tables=tables, figures=figs, counts=counts, html=page)


# Files written for each table (the others stay in memory / in the HTML only).
CSV_FILES = {
    "table2": "table2.csv",
    "table2_ci": "table2_ci.csv",
    "differences": "differences.csv",
    "consistency": "consistency.csv",
    "risk_coverage": "risk_coverage.csv",
    "risk_coverage_curve": "risk_coverage_curve.csv",
    "soft_labels": "soft_labels.csv",
    "alignment": "alignment.csv",
    "combination": "combination.csv",
    "replication": "replication.csv",
    "prompts": "prompts.csv",
    "per_class": "per_class.csv",
    "per_class_ranking": "per_class_ranking.csv",
    "mcnemar": "mcnemar.csv",
    "fleiss": "fleiss.csv",
    "idk_gain": "idk_gain.csv",
    "response_times": "response_times.csv",
    "calibration": "calibration.csv",
    "calibration_bins": "calibration_bins.csv",
    "confusion": "confusion.csv",
}


def build_report(trials: pd.DataFrame, *, out_dir: str | Path, meta: Mapping | None = None,
                 options: ReportOptions = ReportOptions(), probabilities: pd.DataFrame | None = None) -> ReportResult:
    """Compute the report and write it to ``out_dir`` (CSVs, report.html, figures/ unless options.static is False).

    All or nothing: files are assembled in a temporary folder and moved into ``out_dir``
    only when everything succeeded, so a bad input or a missing browser writes nothing.
    """
    if options.static:
        find_browser()  # fail before any work if the static export cannot happen
    result = compute_report(trials, meta=meta, options=options, probabilities=probabilities)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        staging = Path(tmp)
        names = []
        for key, filename in CSV_FILES.items():
            if key not in result.tables:
                continue  # optional: replication (a reference applies), prompts (META lists them), beyond the paper
            table = result.tables[key]
            table.drop(columns=[c for c in table.columns if c.startswith("_")]).to_csv(staging / filename,
                                                                                      index=False)
            names.append(filename)
        (staging / "report.html").write_text(result.html, encoding="utf-8")
        names.append("report.html")
        if options.static:
            for path in export_figures(result.figures, staging / "figures"):
                names.append(f"figures/{path.name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = out_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staging / name, target)
    result.out_dir = out_dir
    result.files = [out_dir / name for name in names]
    return result


def _counts(validated: pd.DataFrame, kept: pd.DataFrame) -> dict[str, int]:
    humans = kept[kept["subject_kind"] == "human"]
    models = kept[kept["subject_kind"] == "model"]
    counts = {
        "n_participants": int(humans["subject"].nunique()),
        "n_human_answers": len(humans),
        "n_models": int(models["subject"].nunique()),
        "n_model_answers": len(models),
        "n_simulated_included": int(humans.loc[humans["simulated"], "subject"].nunique()),
    }
    counts.update(exclusion_counts(validated))
    return counts


__all__ = [
    "CONDITIONS",
    "PROBABILITY_TABLE_COLUMNS",
    "ConditionPlan",
    "ModelProbabilities",
    "StudyDesign",
    "alignment",
    "beyond_paper_tables",
    "combination",
    "live_precision",
    "paper_conditions",
    "plan_halfwidths",
    "plan_study",
    "read_probabilities_csv",
    "risk_coverage",
    "soft_labels",
    "validate_probabilities",
    "weighted_spearman",
    "PAPER_TABLE2",
    "IDK",
    "KINDS",
    "REQUIRED_COLUMNS",
    "Encoded",
    "ReportExportError",
    "ReportInputError",
    "ReportOptions",
    "ReportResult",
    "bootstrap",
    "bootstrap_table2",
    "build_report",
    "calibration",
    "compute_report",
    "compute_tables",
    "confusion",
    "consistency_table",
    "differences_table",
    "encode",
    "error_consistency",
    "expected_calibration_error",
    "export_figures",
    "fleiss_kappa",
    "fleiss_table",
    "idk_gain",
    "item_table",
    "make_figures",
    "mcnemar_exact",
    "mcnemar_table",
    "per_class",
    "prepare_trials",
    "prompts_table",
    "read_reference",
    "read_trials_csv",
    "reference_for",
    "reliability_bins",
    "replication_table",
    "response_times",
    "table2",
    "validate_trials",
]
