"""Django side of the reports: the study's long trial table (humans and models alike) and its header."""

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from evaluator.house import training_note
from evaluator.models import ModelRun
from evaluator.probability_table import model_probability_table
from evaluator.report import ReportOptions, ReportResult, build_report, compute_report
from evaluator.selectors import model_runs_for_study, model_trials
from evaluator.services import study_benchmark
from studyapp.models import Study
from studyapp.selectors.protocol import protocol_check, study_protocol_get
from studyapp.selectors.trials import TRIAL_COLUMNS, human_trials

MODEL_COLUMNS = ["p_target", "p_response"]


def study_trials(*, study: Study) -> pd.DataFrame:
    """Every answer of every human and every finished model run, one row each."""
    rows = human_trials(study=study) + model_trials(study=study)
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS + MODEL_COLUMNS)
    # Models are never simulated or attention-failed; booleans must stay booleans for the CSV.
    for column in ("simulated", "attention_failed"):
        frame[column] = frame[column].astype("boolean").fillna(False).astype(bool)
    return frame


def study_report_meta(*, study: Study, trials: pd.DataFrame | None = None,
                      options: ReportOptions | None = None) -> dict:
    """The report's header. Keys the report module renders: title, dataset, models, templates, design,
    benchmark (when the classes are a known benchmark's), prompts (the exact strings per run and class),
    model_notes (what each model was trained on, and runs scored although it saw study items) and protocol
    (the registered protocol's sha256 and whether the data, ``trials`` when given, match it)."""
    runs = model_runs_for_study(study=study, statuses=(ModelRun.Status.DONE,))
    class_names = list(study.dataset.classes.order_by("index").values_list("name", flat=True))
    meta = {
        "title": f"{study.title} — report",
        "dataset": f"{study.dataset.name}: {len(class_names)} classes, "
                   f"{study.study_items.count()} test items (split {study.test_split!r}); "
                   f"shots from split {study.shot_split!r}, seed {study.seed}",
        "models": [_model_line(run) for run in runs] or ["no finished model run yet"],
        "templates": sorted({t for run in runs for t in run.templates}),
        "design": f"{study.get_design_display()}; k = {study.k_per_item} answers per item and condition; "
                  f"\"I don't know\" {'allowed' if study.allow_idk else 'not offered'}",
        "prompts": [
            {"model": run.name, "class": class_name, "prompts": list(prompts)}
            for run in runs
            for class_name, prompts in zip(class_names, run.prompts, strict=False)
        ],
        "model_notes": [training_note(run_name=run.name, check=run.training_data, allowed=run.allow_trained_items)
                        for run in runs],
    }
    benchmark = study_benchmark(study=study)
    if benchmark:
        meta["benchmark"] = benchmark
    meta["protocol"] = study_report_protocol(study=study, trials=trials, runs=runs, options=options)
    return meta


def study_report_protocol(*, study: Study, trials: pd.DataFrame | None, runs: list[ModelRun],
                          options: ReportOptions | None) -> dict:
    """meta["protocol"]: the registered protocol's sha256, whether the data match it (the database's items, shots,
    classes and design against the protocol's, and the trial table's items and conditions against its lists), how
    each model run relates to it, and the report options that differ from the registered ones."""
    protocol = study_protocol_get(study=study)
    if protocol is None:
        return {"sha256": None, "status": "no protocol recorded: the study is a draft, or opened before protocols "
                                          "were written (write one from its dashboard)"}
    check = protocol_check(study=study, protocol=protocol,
                           items=None if trials is None else trials["item"].unique(),
                           conditions=None if trials is None else trials["condition"].unique())
    out = {"sha256": check.sha256, "format": check.format, "written_at": check.written_at,
           "retrospective": check.retrospective, "data_match": check.matches, "checked": check.checked,
           "problems": check.problems, "models": [_protocol_model_line(run, trials) for run in runs]}
    if options is not None:
        registered = check.document.get("report", {}).get("options", {})
        used = asdict(options)
        out["options_differ"] = [f"{key} = {used[key]!r} (protocol: {value!r})" for key, value in
                                 sorted(registered.items()) if key in used and used[key] != value]
    return out


def _protocol_model_line(run: ModelRun, trials: pd.DataFrame | None) -> str:
    prompts = hashlib.sha256(json.dumps(run.prompts, ensure_ascii=False).encode("utf-8")).hexdigest()
    answers = ""
    if trials is not None:
        names = {run.subject(m) for m in ["", *run.fewshot_methods]}
        answers = f"; {int(trials['subject'].isin(names).sum())} answers in the trial table"
    return (f"{run.name}: fingerprint {run.fingerprint or '?'}; prompts sha256 {prompts[:16]} "
            f"({sum(len(p) for p in run.prompts)} strings); few-shot {', '.join(run.fewshot_methods) or 'none'} "
            f"on the protocol's shots{answers}")


def _model_line(run: ModelRun) -> str:
    fewshot = "; ".join(
        "the paper's baseline (L2-normalised features, multinomial logistic regression with an unpenalised bias, "
        f"scikit-learn's C) as \"{run.subject(m)}\"" if m == "linear-probe" else
        f"zero-shot prior (W pulled towards the zero-shot weights by λ) as \"{run.subject(m)}\""
        if m == "zero-shot-prior" else f"{m} as \"{run.subject(m)}\""
        for m in run.fewshot_methods
    )
    chosen = ("; C and λ were chosen on validation images no study uses (docs/clipmodel.md)"
              if {"linear-probe", "zero-shot-prior"} & set(run.fewshot_methods) else "")
    return (f"{run.name} — fingerprint {run.fingerprint or '?'}; zero-shot: {len(run.templates)} prompt "
            f"template(s) per class; one-/two-shot: {fewshot or 'not scored'}{chosen}; device {run.device or '?'} "
            f"{run.dtype}")


def study_report_compute(*, study: Study, options: ReportOptions) -> ReportResult:
    trials = study_trials(study=study)
    return compute_report(trials, meta=study_report_meta(study=study, trials=trials, options=options), options=options,
                          probabilities=model_probability_table(study=study))


def study_report_write(*, study: Study, out_dir: Path, options: ReportOptions) -> ReportResult:
    trials = study_trials(study=study)
    result = build_report(trials, out_dir=out_dir, meta=study_report_meta(study=study, trials=trials, options=options),
                          options=options, probabilities=model_probability_table(study=study))
    protocol = study_protocol_get(study=study)
    if protocol is not None:  # beside the report that cites it, byte for byte as registered
        path = Path(out_dir) / "protocol.json"
        path.write_bytes(protocol.document.encode("utf-8"))
        result.files.append(path)
    return result
