#!/usr/bin/env bash
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
timeout 60 python3 -m pytest tests/test_gpu_path.py -q -p no:cacheprovider 2>&1 | tail -n 5 | tee "$OUT/gpu_tests2.txt"
timeout 170 python3 - <<'PY' 2>&1 | grep -v "deprecated\|should be kept" | tee "$OUT/sd_compiled.txt"
import torch, time
from comparisons.bench import timed, _gen, PROMPT, SETTINGS
from pipelines.full_size import build_full_size_latent_diffusion
torch.backends.cudnn.benchmark = True
ld = build_full_size_latent_diffusion(device="cuda", dtype=torch.float16)
ld.optimize(channels_last=True, compile=True, compile_mode="max-autotune-no-cudagraphs" if False else None)
first, med = timed(lambda: ld(PROMPT, generator=_gen(), **SETTINGS["full"]["latent_diffusion"]), 3)
print(f"SD1.5-size compiled (default mode): first call {first:.1f} s, median {med:.3f} s/image", flush=True)
PY
