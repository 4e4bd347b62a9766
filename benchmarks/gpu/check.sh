#!/usr/bin/env bash
# The GPU check, in one command: install the missing wheels (no registry), run the tests marked
# `cuda`, time the decode attention kernels and run the bench on the LLaVA-OneVision-7B shape in
# bfloat16 at 1, 8 and 32 sequences and under a memory budget. Fits in 8 minutes on one H200.
#
#   benchmarks/gpu/check.sh [--cpu-dry-run] [--wheels DIR] [OUTPUT_DIR]
#
# OUTPUT_DIR (default: $OUT, else ./gpu-check-out) receives check.json (every step's status,
# seconds and figures, the bench JSON included) and check.log; nothing else, so that a tool that
# returns a few files returns all. Intermediate files go to $PLPHP_GPU_WORK (/tmp/plphp-gpu-check).
# --cpu-dry-run runs the same steps on the CPU in a minute or two (tiny shapes, the tests with
# PLPHP_TEST_DEVICE=cpu): every code path but the CUDA calls. The wheels come from .gpu-wheels/,
# filled by `make gpu-wheels` (GPU_PYTHON=3.12 by default) on a machine with the registry; they are
# installed into $PLPHP_GPU_SITE (/tmp/plphp-gpu-site), first on PYTHONPATH, only where this
# interpreter ($PYTHON, default python3) lacks a requirement. Exit status: the number of failed steps.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DRY=0
WHEELS="$REPO/.gpu-wheels"
OUTDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) DRY=1 ;;
    --wheels) WHEELS="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (allowed: --cpu-dry-run, --wheels DIR, OUTPUT_DIR)"; exit 2 ;;
    *) OUTDIR="$1" ;;
  esac
  shift
done
OUTDIR="${OUTDIR:-${OUT:-$REPO/gpu-check-out}}"
PY="${PYTHON:-python3}"
WORK="${PLPHP_GPU_WORK:-/tmp/plphp-gpu-check}"
SITE="${PLPHP_GPU_SITE:-/tmp/plphp-gpu-site}"
mkdir -p "$OUTDIR" "$WORK"
rm -f "$WORK"/*.json "$WORK"/*.log
LOG="$OUTDIR/check.log"
: >"$LOG"
START=$(date +%s)
FAILED=0
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MPLBACKEND=Agg

say() { echo "[check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# step NAME SECONDS COMMAND...: run with a time limit, log it, record its status in $WORK/steps.jsonl.
# The limits shrink to what is left of $PLPHP_GPU_BUDGET_S (480 s: the check fits in 8 minutes); a
# step with less than 20 s left is skipped (exit 124, as a step that ran out of time).
BUDGET_S="${PLPHP_GPU_BUDGET_S:-480}"
step() {
  local name="$1" limit="$2"; shift 2
  local began=$(date +%s)
  local left=$(( BUDGET_S - (began - START) ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then
    say "== $name: skipped, ${left}s left of the ${BUDGET_S}s budget"
    FAILED=$((FAILED + 1))
    printf '{"step": "%s", "rc": 124, "seconds": 0, "skipped": true}\n' "$name" >>"$WORK/steps.jsonl"
    return
  fi
  say "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  cat "$WORK/$name.log" >>"$LOG"
  tail -n 4 "$WORK/$name.log"
  [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
  say "== $name: exit $rc after $(( $(date +%s) - began ))s"
  printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" "$(( $(date +%s) - began ))" >>"$WORK/steps.jsonl"
}

: >"$WORK/steps.jsonl"
say "repo $REPO, python $PY, wheels $WHEELS, output $OUTDIR, dry run $DRY"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"

# 1. The wheels this interpreter lacks (transformers in our range, pydantic, ...), into $SITE.
step install 120 "$PY" "$REPO/benchmarks/gpu/wheels.py" install --wheels "$WHEELS" --target "$SITE"
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
BEFORE=$FAILED
step versions 60 "$PY" -c "import sys, torch, transformers, plphp; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'plphp', plphp.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())"
READY=$((FAILED - BEFORE))  # 1 when plphp does not import: nothing below can run, only the summary is written

if [ "$READY" -gt 0 ]; then
  say "plphp cannot be imported with its dependencies (see the install step): the tests and benches are skipped"
elif [ $DRY -eq 1 ]; then
  DEVICE=cpu SHAPE=tiny-llava-onevision VISION=200 TEXT=16 STEPS=4 ROUNDS=1 BUDGET=4GiB MAXB=8
  KERNEL=(--model llava-onevision-qwen2-0.5b --batch 1,2 --vision-tokens 200 --rounds 1 --dtype bfloat16)
  export PLPHP_TEST_DEVICE=cpu OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
  DEVICE=cuda SHAPE=llava-onevision-qwen2-7b VISION=6000 TEXT=64 STEPS=32 ROUNDS=2 BUDGET=32GiB MAXB=256
  KERNEL=(--model llava-onevision-qwen2-7b --batch 1,8,32 --vision-tokens 6000 --rounds 5 --dtype bfloat16 --bandwidth-mb 4096)
  export PLPHP_TEST_DEVICE=cuda
fi

run_checks() {
# 2. The tests marked cuda: contract in float32, bf16 / fp16 under pruning, sdpa and flash, device_map, bench.
step tests 240 env PLPHP_GPU_OUT="$WORK" "$PY" -m pytest -p no:cacheprovider -q -m cuda -rs "$REPO/tests/gpu"

# 3. The one-query decode kernels alone: K/V read bandwidth against the measured read figure.
step kernels 60 "$PY" "$REPO/benchmarks/decode_attention.py" "${KERNEL[@]}" --device "$DEVICE" --json "$WORK/kernels.json"

# 4. The bench: 1, 8 and 32 sequences (unpruned, full-fast, full, plphp), then under a memory budget.
BENCH=(-m plphp bench --model "$SHAPE" --dtype bfloat16 --device "$DEVICE" --vision-tokens "$VISION" --text-tokens "$TEXT")
BENCH+=(--new-tokens "$STEPS" --rounds "$ROUNDS" --warmup-tokens 2 --bandwidth-mb 1024)
for batch in 1 8 32; do
  step "bench-b$batch" 100 "$PY" "${BENCH[@]}" --batch "$batch" --policy full --policy plphp --json "$WORK/bench-b$batch.json"
done
step bench-budget 150 "$PY" "${BENCH[@]}" --memory-budget "$BUDGET" --max-batch "$MAXB" --policy plphp \
  --new-tokens 8 --json "$WORK/bench-budget.json"
}
[ "$READY" -gt 0 ] || run_checks

# check.json: the steps and everything they wrote.
"$PY" - "$WORK" "$OUTDIR/check.json" "$DRY" <<'EOF'
import json, sys
from pathlib import Path
work, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
steps = [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines() if line.strip()]
for entry in steps:
    log = work / f"{entry['step']}.log"
    entry["log_tail"] = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
results = {}
for path in sorted(work.glob("*.json")):
    try:
        results[path.stem] = json.loads(path.read_text())
    except ValueError as exc:
        results[path.stem] = f"unreadable: {exc}"
payload = {"cpu_dry_run": dry, "failed_steps": [s["step"] for s in steps if s["rc"] != 0], "steps": steps, "results": results}
out.write_text(json.dumps(payload, indent=1, default=str))
print(f"wrote {out}: {len(steps)} steps, failed: {payload['failed_steps'] or 'none'}")
EOF
say "done: $FAILED failed step(s); $(( $(date +%s) - START ))s in all; $OUTDIR/check.json and check.log"
exit $FAILED
