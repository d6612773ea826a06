#!/usr/bin/env bash
# The GPU figures in one command, from a clean clone on a Linux box with an NVIDIA GPU (and its driver):
#
#   benchmarks/bench_gpu.sh            # results in var/bench-gpu/ (summary.md, and each benchmark's own output)
#
# 1. encoding: clipmodel.encode_images vs a bare open_clip loop, ViT-B-32 and ViT-L-14, bf16 autocast;
# 2. scoring: a whole run (Redis, a Celery worker, SQLite, the feature cache) vs the bare clipmodel pipeline,
#    ViT-B-32 and ViT-L-14 (random weights), bf16 autocast (clipmodel's default on CUDA);
# 3. the paper's model end to end: the demo's Pets study scored by ViT-L-14-336 through `manage.py score_study`
#    and a worker, with OpenAI's weights when they are in the Hugging Face cache, else random weights (the
#    speed is the same; the summary says which).
# It runs `./run setup` first (system packages as root, .venv from requirements.txt, migrations), needs the demo
# data (DEMO_DATA, or ../shared/data beside the checkout; see README) and starts its own Redis on a free port.
# STEPS=3 runs only step 3; PETS_MODEL and DEVICE change its model and device (e.g. a dry run on a CPU box:
# STEPS=3 PETS_MODEL=ViT-B-32 DEVICE=cpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/var/bench-gpu}
PY=$ROOT/.venv/bin/python
STEPS=${STEPS:-123}
PETS_MODEL=${PETS_MODEL:-ViT-L-14-336}
DEVICE=${DEVICE:-cuda}
# HF_HUB_OFFLINE as everywhere: unset, a short probe of the hub decides (online, OpenAI's weights download in 3).

./run setup
mkdir -p "$OUT"
"$PY" - "$DEVICE" <<'EOF' | tee "$OUT/device.txt"
import sys

import torch

if sys.argv[1] == "cpu":
    print(f"CPU ({torch.get_num_threads()} torch threads), torch {torch.__version__}")
else:
    assert torch.cuda.is_available(), "torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)"
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
touch "$OUT/encode.txt" "$OUT/scoring.txt"

if [[ $STEPS == *1* ]]; then
  echo "== 1. encoding (bf16)"
  "$PY" benchmarks/bench_encode.py --device cuda --dtype bf16 --models ViT-B-32 ViT-L-14 --dataset eurosat \
    --n-images 5000 --batch-size 256 --repeats 3 | tee "$OUT/encode.txt"
fi

if [[ $STEPS == *2* ]]; then
  echo "== 2. scoring, end to end vs bare (bf16)"
  "$PY" benchmarks/bench_scoring.py --models ViT-B-32 ViT-L-14 --device cuda --chunk-size 512 --repeats 4 \
    --json "$OUT/scoring.json" | tee "$OUT/scoring.txt"
fi

[[ $STEPS == *3* ]] || exit 0
echo "== 3. $PETS_MODEL on the demo's Pets study, end to end"
VAR=$OUT/var
rm -rf "$VAR"
mkdir -p "$VAR"
REDIS_PORT=$("$PY" -c "from tests.processes import free_port; print(free_port())")
export VAR_DIR=$VAR REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$VAR" --save "" --appendonly no --daemonize yes \
  --pidfile "$VAR/redis.pid" >/dev/null
WORKER=
cleanup() {
  [ -n "$WORKER" ] && kill "$WORKER" 2>/dev/null && wait "$WORKER" 2>/dev/null
  [ -f "$VAR/redis.pid" ] && kill "$(cat "$VAR/redis.pid")" 2>/dev/null
  return 0
}
trap cleanup EXIT
"$PY" manage.py migrate -v0
mapfile -t CODES < <("$PY" manage.py setup_demo)
MODEL_ARGS=$("$PY" - "$VAR" "$PETS_MODEL" <<'EOF'
import sys
from pathlib import Path

import clipmodel
from benchmarks.bench_scoring import random_checkpoint

folder, name = Path(sys.argv[1]), sys.argv[2]
try:
    clipmodel.load_clip(name=name, pretrained="openai", device="cpu")
    print(f"--model {name} --pretrained openai")
except clipmodel.ModelUnavailable:
    print(f"--checkpoint {random_checkpoint(name, folder / f'{name}-random.pt')}")
EOF
)
echo "weights: $MODEL_ARGS" | tee "$OUT/pets.txt"
"$ROOT/.venv/bin/celery" -A config worker -Q scoring -c 1 --pool solo -n gpu0@%h --loglevel INFO \
  >"$VAR/worker.log" 2>&1 &
WORKER=$!
START=$SECONDS
# shellcheck disable=SC2086  # MODEL_ARGS is two or four words
"$PY" manage.py score_study "${CODES[0]}" $MODEL_ARGS --chunk-size 512 --device "$DEVICE" --worker-timeout 120 \
  2>&1 | tee -a "$OUT/pets.txt"
echo "wall: $((SECONDS - START)) s from the command's start (the worker's model load included)" | tee -a "$OUT/pets.txt"
"$PY" manage.py shell -v 0 -c "
from evaluator.models import ModelRun
run = ModelRun.objects.get(study__code='${CODES[0]}')
seconds = (run.finished_at - run.created_at).total_seconds()
print(f'{run.name}: {run.status}, {run.items_total} predictions in {seconds:.1f} s ({run.items_total / seconds:.0f}/s), '
      f'device {run.device}, {run.dtype}, {run.fingerprint}')
" | tee -a "$OUT/pets.txt"

{
  echo "# GPU benchmarks ($(cat "$OUT/device.txt"))"
  echo
  echo "## Encoding"; grep '^|' "$OUT/encode.txt" || echo "(not run)"; echo
  echo "## Scoring, end to end vs bare"; grep '^|' "$OUT/scoring.txt" || echo "(not run)"; echo
  echo "## $PETS_MODEL, the demo's Pets study"; grep -v '%|' "$OUT/pets.txt" || true
} >"$OUT/summary.md"
cat "$OUT/summary.md"
