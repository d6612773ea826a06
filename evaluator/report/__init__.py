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
from .export import ReportExportError, export_figures, find_browser
from .html import render_html
from .metrics import AVERAGES, Encoded, confusion, encode, item_table, per_class, table2
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
                   meta: Mapping | None = None) -> tuple[dict, dict]:
    """All report tables (name → DataFrame) and the header counts, without figures or files.

    ``replication`` is there when a reference table applies (options.reference, or the paper's Table 2
    when meta["benchmark"] is "oxford-pets"); ``prompts`` when meta lists them.
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
    if reference is not None:
        tables["replication"] = replication_table(reference, tables["table2_ci"])
    prompts = prompts_table(meta)
    if not prompts.empty:
        tables["prompts"] = prompts
    return tables, {**_counts(validated, kept), **inattentive}


def make_figures(tables: Mapping[str, pd.DataFrame]) -> dict[str, object]:
    """Plotly figures from the tables, in report order."""
    figs = {"table2": _fig.table2_figure(tables["table2"], tables.get("table2_ci"))}
    if not tables["per_class_ranking"].empty:
        figs["per_class"] = _fig.per_class_figure(tables["per_class_ranking"])
    if not tables["consistency"].empty:
        figs["consistency"] = _fig.consistency_figure(tables["consistency"])
    if not tables["response_times"].empty:
        figs["response_times"] = _fig.rt_figure(tables["response_times"])
    if not tables["calibration_bins"].empty:
        figs["calibration"] = _fig.calibration_figure(tables["calibration_bins"], tables["calibration"])
    figs.update(_fig.confusion_figures(tables["confusion"]))
    return figs


def compute_report(trials: pd.DataFrame, *, meta: Mapping | None = None,
                   options: ReportOptions = ReportOptions()) -> ReportResult:
    """Tables, figures and the HTML page in memory; nothing is written."""
    tables, counts = compute_tables(trials, options=options, meta=meta)
    figs = make_figures(tables)
    page = render_html(meta=dict(meta or {}), counts=counts, options=asdict(options), tables=tables, figures=figs)
    return ReportResult(tables=tables, figures=figs, counts=counts, html=page)


# Files written for each table (the others stay in memory / in the HTML only).
CSV_FILES = {
    "table2": "table2.csv",
    "table2_ci": "table2_ci.csv",
    "differences": "differences.csv",
    "consistency": "consistency.csv",
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
                 options: ReportOptions = ReportOptions()) -> ReportResult:
    """Compute the report and write it to ``out_dir`` (CSVs, report.html, figures/ unless options.static is False).

    All or nothing: files are assembled in a temporary folder and moved into ``out_dir``
    only when everything succeeded, so a bad input or a missing browser writes nothing.
    """
    if options.static:
        find_browser()  # fail before any work if the static export cannot happen
    result = compute_report(trials, meta=meta, options=options)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        staging = Path(tmp)
        names = []
        for key, filename in CSV_FILES.items():
            if key not in result.tables:
                continue  # optional tables: replication (a reference applies), prompts (META lists them)
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
