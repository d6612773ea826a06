"""How fast a missing pretrained weight fails, offline: the goal is seconds, not open_clip's ~46 s of hub retries.

Each case runs in a fresh interpreter (huggingface_hub reads HF_HUB_OFFLINE once, at import) with an empty
HF_HOME, and loads `ViT-B-32`/`openai`:

- `HF_HUB_OFFLINE=1` set by the user;
- `HF_HUB_OFFLINE` unset: clipmodel probes the hub (clipmodel/hub.py) and decides. Where the hub is
  reachable this case downloads the weights instead (that is the point of the probe), so run it offline.

    .venv/bin/python benchmarks/bench_model_unavailable.py [--repeats 3]

Prints, per case, the median seconds for the whole process (interpreter, imports, probe, failure) and for
the `load_clip` call alone, and the decision the probe made. These durations used to be asserted by
tests/clipmodel/test_loading.py and tests/evaluator/test_workers.py; tests assert the failure, this measures it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = textwrap.dedent(
    """
    import time
    import clipmodel
    from clipmodel import hub
    start = time.monotonic()
    try:
        clipmodel.load_clip(name="ViT-B-32", pretrained="openai", device="cpu")
        print("LOADED")
    except clipmodel.ModelUnavailable:
        print(f"RAISED {time.monotonic() - start:.3f} {hub.decision}")
    """
)


def run_case(*, offline: str | None) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as hf_home:
        env = {**os.environ, "HF_HOME": hf_home, "PYTHONPATH": str(ROOT)}
        env.pop("HF_HUB_CACHE", None)
        env.pop("HF_HUB_OFFLINE", None)
        if offline is not None:
            env["HF_HUB_OFFLINE"] = offline
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
        total = time.monotonic() - started
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith(("RAISED", "LOADED"))), "")
    if not line.startswith("RAISED"):
        raise SystemExit(f"expected ModelUnavailable, got: {line or result.stderr[-2000:]}")
    _, call, decision = line.split(" ", 2)
    return total, float(call), decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| HF_HUB_OFFLINE | decided by | process s (median) | load_clip call s (median) |")
    print("|---|---|---|---|")
    for offline in ("1", None):
        runs = [run_case(offline=offline) for _ in range(args.repeats)]
        print(f"| {offline or 'unset'} | {runs[0][2]} | {statistics.median(r[0] for r in runs):.2f} | "
              f"{statistics.median(r[1] for r in runs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
