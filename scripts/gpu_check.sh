#!/usr/bin/env bash
# One prepared pass on a lent GPU machine (the `device` tool): GPU tests, then the full-size bench.
# Wheels of the versions in requirements.txt travel in .whl/ (the machine has torch but no diffusers).
# Each step has its own time limit so a slow compile cannot eat the eager results.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
timeout "${TEST_LIMIT:-120}" python3 -m pytest tests/pipelines/test_gpu_path.py tests/pipelines/test_full_size.py -q -p no:cacheprovider 2>&1 \
    | tail -n 15 | tee "$OUT/gpu_tests.txt"
# fp16: eager, then CUDA graphs (three eager calls' capture per model), then the compiled denoisers captured in
# graphs; the JSON is rewritten after each pass, so a pass cut short by the limit keeps the others.
timeout "${BENCH_LIMIT:-300}" python3 -m comparisons.bench --full-size --device cuda --repeats 3 --cuda-graphs --compile \
    ${COMPILE_MODE:+--compile-mode "$COMPILE_MODE"} --json "$OUT/bench_full.json" 2>&1 \
    | grep -v "deprecated\|should be kept" | tee "$OUT/bench_full.txt"
timeout "${BF16_LIMIT:-150}" python3 -m comparisons.bench --full-size --device cuda --repeats 3 --dtype bfloat16 --cuda-graphs \
    --json "$OUT/bench_full_bf16.json" 2>&1 | grep -v "deprecated\|should be kept" | tee "$OUT/bench_full_bf16.txt"
