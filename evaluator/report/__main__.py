"""CLI: ``python -m evaluator.report TRIALS.csv --out DIR [options]``.

Exit status: 0 on success, 2 for bad input (nothing written), 1 when the static export
cannot run (no browser; nothing written either).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import (
    ReportExportError,
    ReportInputError,
    ReportOptions,
    build_report,
    read_probabilities_csv,
    read_trials_csv,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m evaluator.report",
        description="Table 2 of the CLIP paper's human study, plus per-class, agreement and calibration reports.")
    parser.add_argument("trials", type=Path,
                        help="long trial CSV (subject, subject_kind, condition, item, target, response, rt_ms"
                             "[, simulated, attention_failed, p_target, p_response])")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--average", choices=("macro", "micro"), default="macro",
                        help="macro: mean per-class accuracy (default, the paper's); micro: plain accuracy")
    parser.add_argument("--include-simulated", action="store_true", help="keep simulated participants")
    parser.add_argument("--include-attention-failed", action="store_true",
                        help="keep participants who failed the attention checks")
    parser.add_argument("--max-blur-count", type=int, metavar="N",
                        help="leave out answers given with more than N window blurs (tab switches) during the trial")
    parser.add_argument("--max-hidden-ms", type=int, metavar="MS",
                        help="leave out answers given with the page hidden for more than MS ms during the trial")
    parser.add_argument("--attention-unit", choices=("trial", "participant"), default="trial",
                        help="with --max-blur-count / --max-hidden-ms: leave out those answers (trial, default) or "
                             "every answer of a participant who gave one (participant)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0: no CIs)")
    parser.add_argument("--resample", choices=("two-way", "items", "participants"), default="two-way",
                        help="bootstrap unit (default two-way: human rows resample participants and items, model "
                             "rows items; items: items only, within each class; participants: participants only)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--meta", type=Path, help="JSON object with header info (title, dataset, models, ...)")
    parser.add_argument("--reference", type=Path, metavar="FILE",
                        help="a published Table 2 in the shape of table2.csv, set beside ours (replication.csv); "
                             "default: the CLIP paper's Table 2 when META's benchmark is oxford-pets")
    parser.add_argument("--probabilities", type=Path, metavar="FILE",
                        help="the models' probability vectors, a long CSV (subject, condition, item, class, p): "
                             "cross-entropy/KL against the soft labels, and the people + model combination")
    parser.add_argument("--no-beyond-paper", action="store_true",
                        help="skip risk-coverage, soft labels/alignment and the people + model combination")
    parser.add_argument("--combination-folds", type=int, default=5, metavar="K",
                        help="cross-validation folds over items for the people + model combination (default 5)")
    parser.add_argument("--no-static", action="store_true", help="skip the PNG/PDF figure export")
    return parser.parse_args(argv)


def read_meta(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"cannot read META {path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ReportInputError(f"META {path} must hold a JSON object, not {type(meta).__name__}")
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = ReportOptions(average=args.average, include_simulated=args.include_simulated,
                            include_attention_failed=args.include_attention_failed, bootstrap=args.bootstrap,
                            resample=args.resample, seed=args.seed, static=not args.no_static,
                            reference=str(args.reference) if args.reference else None,
                            beyond_paper=not args.no_beyond_paper, combination_folds=args.combination_folds,
                            max_blur_count=args.max_blur_count, max_hidden_ms=args.max_hidden_ms,
                            attention_unit=args.attention_unit)
    try:
        meta = read_meta(args.meta)
        trials = read_trials_csv(args.trials)
        probabilities = read_probabilities_csv(args.probabilities) if args.probabilities else None
        result = build_report(trials, out_dir=args.out, meta=meta, options=options, probabilities=probabilities)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReportExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = result.counts
    print(f"{counts['n_participants']} participants, {counts['n_human_answers']} human answers, "
          f"{counts['n_models']} model(s), {counts['n_model_answers']} model answers")
    print(result.tables["table2"].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"wrote {len(result.files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
