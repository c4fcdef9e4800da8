#!/usr/bin/env bash
# One device call that measures what needs a GPU, in at most about 9.5 minutes (the timeouts below), into $OUT:
#   1. the CUDA tests (our CUDA and Triton kernels against the float64 reference, bf16 training);
#   2. ptxas register/spill counts of the CUDA kernels, compute-sanitizer racecheck and memcheck;
#   3. bench/gpu_kernels.py (every WKV7 op, T = 512/1024/4096, the four model shapes);
#   4. bench/gpu_trainer.py on a slice of the grid (MODELS, METHODS, BSZ below; default: all
#      methods of 0.1B and 1.5B at micro_bsz 1, the seeds' setting).
# Prepare here with bench/device_wheels.sh, then (device tool, from the repository root):
#   run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=600)
# Copy $OUT's JSON into bench/results/ and commit them with the device name, date and command.
set -u
OUT=${OUT:-/tmp/rwkv-tui-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export RWKV_TUI_KERNEL_CACHE=/tmp/rwkv-tui-kernels
export PATH="$PATH:/usr/local/cuda/bin"  # nvcc, compute-sanitizer
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -1; } > "$OUT/machine.txt" 2>&1

timeout 200 python3 -m pytest -q -p no:cacheprovider -m cuda -rs \
  tests/test_kernels_cuda.py tests/test_kernels_triton.py tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1
echo "gpu tests exit $?" >> "$OUT/gpu_tests.txt"

nvcc -c -std=c++17 -O3 -arch=sm_90 -Xptxas -v kernels/cuda/wkv7.cu -o /tmp/wkv7.o > "$OUT/ptxas.txt" 2>&1

for tool in racecheck memcheck; do  # the kernel was built by the tests above (cached)
  timeout 45 compute-sanitizer --tool $tool python3 bench/wkv7_cuda_sanitize.py > "$OUT/sanitize_$tool.txt" 2>&1
  echo "compute-sanitizer $tool exit $?" >> "$OUT/sanitize_$tool.txt"
done

timeout 110 python3 bench/gpu_kernels.py --out "$OUT" > "$OUT/gpu_kernels.txt" 2>&1
echo "gpu_kernels exit $?" >> "$OUT/gpu_kernels.txt"

timeout 150 python3 bench/gpu_trainer.py --models "${MODELS:-0.1B,1.5B}" --methods "${METHODS:-lora,pissa,state,full,lora-int8,lora-nf4}" \
  --micro-bsz "${BSZ:-1}" --out "$OUT" > "$OUT/gpu_trainer.txt" 2>&1
echo "gpu_trainer exit $?" >> "$OUT/gpu_trainer.txt"
tail -n 3 "$OUT"/*.txt
