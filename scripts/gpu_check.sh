#!/usr/bin/env bash
# GPU check: one command for a machine with an NVIDIA GPU, at most about 16 minutes (plus, the
# first time on a machine without a CUDA torch, the install):
#
#     bash scripts/gpu_check.sh
#
# 1. finds a Python whose torch sees the GPU (PYTHON, .venv, .venv-gpu, python3), or makes
#    .venv-gpu with PyPI's torch (a CUDA build on Linux) and the project;
# 2. prints the GPU (nvidia-smi);
# 3. runs the CUDA tests (pytest -m cuda: generate, the paged engine, half precision, training
#    steps and attention on the GPU against the CPU);
# 4. runs the Triton kernel tests (all of tests/kernels, compiled for the GPU; on a CPU they
#    run in Triton's interpreter, bf16 and the GPU tile sizes only here);
# 5. runs benchmarks/on_device.py: decode, serving and training speed on the GPU, each beside
#    its reference (HF transformers, static batches, HF + torch AdamW);
# 6. runs benchmarks/flash_attention_gpu.py: the Triton flash-attention kernel against torch
#    SDPA's flash backend, forward and forward + backward, N = 1k..16k, d 64 and 128, bf16.
# Logs and figures go to $OUT (default out/gpu_check). Without a GPU it says so and exits 0.
# Nothing in the project depends on this script; the CPU test suite is the gate.
# Offline, CUDA tests that need the corpus download fail unless $LLM_INTERNALS_HOME holds the
# cached corpus: then run with GPU_CHECK_MARKS="cuda and not network".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-out/gpu_check}"
TEST_SECONDS="${GPU_CHECK_TEST_SECONDS:-240}"
MARKS="${GPU_CHECK_MARKS:-cuda}"
BENCH_SECONDS="${GPU_CHECK_BENCH_SECONDS:-240}"
KERNEL_SECONDS="${GPU_CHECK_KERNEL_SECONDS:-240}"
FLASH_SECONDS="${GPU_CHECK_FLASH_SECONDS:-240}"
section() { printf '\n== %s\n' "$*"; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or lists no GPU), so there is"
    echo "nothing to check. Run it on a machine with a CUDA GPU; here, the CPU suite is the gate."
    exit 0
fi
mkdir -p "$OUT"

section "Python with a CUDA build of torch"
sees_gpu() { "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }
PY=""
for candidate in "${PYTHON:-}" .venv/bin/python .venv-gpu/bin/python python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && sees_gpu "$candidate"; then
        PY="$candidate"
        break
    fi
done
if [ -z "$PY" ]; then
    echo "no Python here has a torch that sees the GPU: making .venv-gpu (pip, several GB)"
    python3 -m venv .venv-gpu
    timeout 600 .venv-gpu/bin/pip install -q -e '.[dev]'
    PY=.venv-gpu/bin/python
    if ! sees_gpu "$PY"; then
        echo "gpu_check: the torch installed in .venv-gpu does not see the GPU either" >&2
        exit 1
    fi
fi
if ! "$PY" -c 'import llm_internals' 2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the project, uninstalled
fi
missing=$("$PY" -c '
import importlib.util
need = "numpy regex safetensors rich pytest hypothesis transformers".split()
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))')
if [ -n "$missing" ]; then
    echo "gpu_check: $PY lacks $missing; install them (pip install -e '.[dev]')" >&2
    exit 1
fi
"$PY" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__, "CUDA", torch.version.cuda)'

section "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
nvidia-smi >"$OUT/nvidia-smi.txt"

failed=()
section "CUDA tests (pytest -m \"$MARKS\")"
# Only the files that hold CUDA tests: collecting the rest would import packages (the server's)
# that a GPU image may lack. tests/kernels runs next, whole.
mapfile -t cuda_tests < <(grep -rlE 'mark\.cuda' tests --include='test_*.py' \
    | grep -v '^tests/kernels/' | sort)
if ! timeout "$TEST_SECONDS" "$PY" -m pytest -m "$MARKS" -q -p no:cacheprovider "${cuda_tests[@]}" \
    2>&1 | tee "$OUT/pytest_cuda.txt"; then
    failed+=("CUDA tests")
fi

section "Triton kernel tests (pytest tests/kernels, compiled for the GPU)"
has_triton() {
    "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("triton") is None)'
}
if ! has_triton; then
    echo "gpu_check: $PY has no triton (pip install -e '.[triton]'), so the kernel is unchecked" >&2
    failed+=("Triton kernel tests")
elif ! timeout "$KERNEL_SECONDS" "$PY" -m pytest -q -p no:cacheprovider -rs tests/kernels \
    2>&1 | tee "$OUT/pytest_kernels.txt"; then
    failed+=("Triton kernel tests")
fi

section "decode, serving and training benchmark (benchmarks/on_device.py)"
if ! PYTHONUNBUFFERED=1 timeout "$BENCH_SECONDS" "$PY" benchmarks/on_device.py --device cuda \
    --out "$OUT/on_device.json" 2>&1 | tee "$OUT/on_device.txt"; then
    failed+=("benchmark")
fi

section "flash attention: Triton kernel vs SDPA flash (benchmarks/flash_attention_gpu.py)"
if ! has_triton; then
    failed+=("flash-attention benchmark (no triton)")
elif ! PYTHONUNBUFFERED=1 timeout "$FLASH_SECONDS" "$PY" benchmarks/flash_attention_gpu.py \
    --out "$OUT/flash_attention_gpu.json" 2>&1 | tee "$OUT/flash_attention_gpu.txt"; then
    failed+=("flash-attention benchmark")
fi

section "result"
echo "logs and figures: $OUT"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "gpu_check FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "gpu_check passed"
