#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU session: downloads into .whl/ the wheels the GPU
# machine lacks (it has torch, triton, lightning, numpy, rich, pytest, ninja and nvcc, and no
# network). About 45 MB; the device tool carries .whl/ when asked (carry: [".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform any -d .whl \
  pyrwkv-tokenizer==0.9.1 tomli-w==1.2.0 platformdirs==4.14.9 bitsandbytes==0.50.2 \
  rwkv-fla==0.7.202508221413 "$@"
ls -la .whl
