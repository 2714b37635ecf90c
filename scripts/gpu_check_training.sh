#!/usr/bin/env bash
# GPU check of the reference training: DDP and FSDP2 under torchrun on every visible GPU (NCCL, bf16 where the GPU
# supports it); prints samples/s, peak GPU memory and the final hold-out metrics of each run.
#
#   scripts/gpu_check_training.sh                 # on a GPU machine: NCCL, one process per GPU
#   ROWS=400000 EPOCHS=5 scripts/gpu_check_training.sh
#   FORCE_CPU=1 scripts/gpu_check_training.sh     # the CPU fallback (gloo, 2 processes): what runs without a GPU
#
# Needs python with torch (CUDA wheels on the GPU machine), numpy, pandas, pyarrow, scikit-learn; no Feast and no
# MLflow (untracked runs): the training set is the generator's request-time columns (build_direct_training_set).
# Output: one JSON line per run on stdout, prefixed "RESULT ", plus the GPU model from nvidia-smi.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x /work/main/.venv/bin/python ] && echo /work/main/.venv/bin/python || command -v python3 )}"
ROWS="${ROWS:-200000}"
EPOCHS="${EPOCHS:-3}"
BATCH="${BATCH:-4096}"
HIDDEN="${HIDDEN:-1024,1024,512}"
WORK="$(mktemp -d -t finml-gpu-check-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset MLFLOW_TRACKING_URI

GPUS="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')"
if [ "${FORCE_CPU:-0}" = 1 ] || [ "$GPUS" = 0 ]; then
  echo "no CUDA device (or FORCE_CPU=1): CPU fallback with gloo, 2 processes, small model" >&2
  NPROC=2; ROWS="${CPU_ROWS:-40000}"; BATCH="${CPU_BATCH:-1024}"; HIDDEN="${CPU_HIDDEN:-64,64}"; DEVICE=cpu
  export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1
else
  NPROC="$GPUS"; DEVICE=cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version,mig.mode.current --format=csv,noheader || true
fi
"$PYTHON" -c 'import torch, sys; print(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
  f"bf16 {torch.cuda.is_available() and torch.cuda.is_bf16_supported()}, nccl "
  f"{torch.distributed.is_nccl_available()}", file=sys.stderr)'

TS="$("$PYTHON" -c "
from pathlib import Path
from workloads.reference.local_data import build_direct_training_set
print(build_direct_training_set(Path('$WORK'), $ROWS, seed=0))")"
# Make the global batch a multiple of the process count.
BATCH=$(( BATCH / NPROC * NPROC ))

for MODE in ddp fsdp2; do
  SUMMARY="$WORK/$MODE.json"
  started=$(date +%s)
  "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node="$NPROC" -m workloads.reference.train \
    --training-set="$TS" --checkpoint-dir="$WORK/ck-$MODE" --mode="$MODE" --epochs="$EPOCHS" \
    --global-batch-size="$BATCH" --hidden="$HIDDEN" --summary-json="$SUMMARY" >&2
  "$PYTHON" - "$SUMMARY" "$DEVICE" "$NPROC" "$ROWS" "$(( $(date +%s) - started ))" <<'PY'
import json, sys
path, device, nproc, rows, wall = sys.argv[1:]
d = json.load(open(path))
steady = [h["samples_per_second"] for h in d["history"][1:]] or [d["history"][0]["samples_per_second"]]
out = {"mode": d["mode"], "device": device, "processes": int(nproc), "backend": d["backend"],
       "precision": d["precision"], "rows": int(rows), "epochs": d["epochs_completed"],
       "samples_per_second": round(sum(steady) / len(steady)),
       "peak_gpu_memory_mib": None if d["peak_memory_bytes"] is None else round(d["peak_memory_bytes"] / 2**20, 1),
       "peak_rss_mib": round(d["peak_rss_bytes"] / 2**20, 1),
       "holdout_pr_auc": round(d["holdout_pr_auc"], 4),
       "holdout_recall_at_1pct_fpr": round(d["holdout_recall_at_1pct_fpr"], 4),
       "baseline_gbt_pr_auc": round(d.get("baseline_gbt_pr_auc", float("nan")), 4),
       "wall_seconds": int(wall)}
print("RESULT " + json.dumps(out))
PY
done
