#!/usr/bin/env bash
# Record the GPU benchmark results that chapter 12 loads (book/results/*.json).
#
# Run from the repository root on a machine with one CUDA GPU, after the README's set-up
# (`pip install -r requirements.txt`); this script installs nothing:
#     bash book/results/run_gpu.sh [OUT_DIR]        # OUT_DIR defaults to book/results
# Each file is named after the GPU and dtype (e.g. cuda-nvidia-h200-bfloat16.json) and records
# the machine with every figure. Commit the files as written: results are never hand-edited.
# Expected time on an H100/H200: about 10 minutes, most of it torch.compile.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-book/results}"
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true

# 1. Every benchmark at the book's default shapes (t5-small, batch 8, 512 -> 114 tokens):
#    t5edu vs HF training step and generation, attention backends vs length, norms, the ladder.
python -m t5edu.bench all --device cuda --dtype bfloat16 --out "$OUT/"

# 2. The MFU target: a T5-base training step in bf16 at a batch that fills the GPU.
python -m t5edu.bench model --device cuda --dtype bfloat16 --preset t5-base --batch 32 --out "$OUT/"

ls -l "$OUT"/cuda-*.json
