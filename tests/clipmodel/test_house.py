"""clipmodel.house's streaming of the trainer's output (its cache and exclusions: test_train.py)."""

import sys

from clipmodel.house import run_streaming

# A child that writes like `python -m clipmodel.train`: print() lines, and tqdm's carriage-return updates on stderr.
TRAINER_LIKE = r"""
import sys, time
print("house-vit-64: 8.8M params", flush=True)
for pct in (0, 50, 100):
    sys.stderr.write(f"\repoch 1/5: {pct:3d}%|" + "#" * (pct // 10))
    sys.stderr.flush()
    time.sleep(0.05)
sys.stderr.write("\n")
print("epoch 1: loss 3.1", flush=True)
sys.exit(3)
"""


def test_every_line_and_progress_update_reaches_the_callback_as_it_comes_and_finished_lines_reach_stderr(capsys):
    seen = []

    code = run_streaming([sys.executable, "-c", TRAINER_LIKE], env={}, on_output=seen.append)

    assert code == 3
    assert seen == ["house-vit-64: 8.8M params", "epoch 1/5:   0%|", "epoch 1/5:  50%|#####",
                    "epoch 1/5: 100%|##########", "epoch 1: loss 3.1"]
    # Progress updates are not echoed (a worker log would fill with them), finished lines are.
    assert capsys.readouterr().err.splitlines() == ["house-vit-64: 8.8M params", "epoch 1/5: 100%|##########",
                                                    "epoch 1: loss 3.1"]
