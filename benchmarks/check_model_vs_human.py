"""Error consistency on model-vs-human's real data: our estimator against their mean of per-pair kappas.

Their raw data are theirs and are not shipped here. With a copy of github.com/bethgelab/model-vs-human:

    .venv/bin/python benchmarks/check_model_vs_human.py PATH/model-vs-human/raw-data/sketch [--model resnet50]

Every participant there answers every image (full overlap), so our sparse-design estimator must equal
their per-pair mean exactly; the script prints both and exits non-zero when they differ by more than 0.01.
"""

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.report import consistency_table  # noqa: E402
from tests.simulated_studies import model_vs_human_kappa  # noqa: E402


def raw_trials(folder: Path, model: str) -> pd.DataFrame:
    frames = []
    for path in sorted(folder.glob("*.csv")):
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        subject = raw["subj"].iloc[0]
        if subject.startswith("subject-") or subject == model:
            frames.append(pd.DataFrame({
                # Image names carry a per-session prefix; the original image is the last "_" field.
                "item": raw["imagename"].str.rsplit("_", n=1).str[-1], "target": raw["category"],
                "response": raw["object_response"], "subject": subject,
                "subject_kind": "human" if subject.startswith("subject-") else "model",
            }))
    if not frames:
        sys.exit(f"no raw-data CSV files in {folder}")
    return pd.concat(frames, ignore_index=True).assign(condition="zero-shot", rt_ms=np.nan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="model-vs-human raw-data/<experiment> folder")
    parser.add_argument("--model", default="resnet50")
    args = parser.parse_args()
    trials = raw_trials(args.folder, args.model)
    by_subject = dict(tuple(trials.groupby("subject")))
    people = sorted(s for s in by_subject if s.startswith("subject-"))
    theirs = {"human-human": np.mean([model_vs_human_kappa(by_subject[a], by_subject[b])
                                      for a, b in itertools.combinations(people, 2)])}
    if args.model in by_subject:  # the model's answers, where the folder has them
        theirs[f"human-model:{args.model}"] = np.mean([model_vs_human_kappa(by_subject[a], by_subject[args.model])
                                                       for a in people])
    ours = consistency_table(trials, n_resamples=0)
    ours = ours[ours["idk"] == "error"].set_index("pair_kind")["error_consistency"]
    worst = 0.0
    for kind, value in theirs.items():
        worst = max(worst, abs(ours[kind] - value))
        print(f"{kind:28s} model-vs-human {value:.12f}   ours {ours[kind]:.12f}   |diff| {abs(ours[kind] - value):.2e}")
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
