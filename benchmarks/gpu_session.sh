#!/usr/bin/env bash
# One GPU session in one go (the device tool's machine: jax with CUDA, no egglog, no network):
# the Pallas tests on the GPU, tile/GEMM tuning, then the benchmark; logs land in $OUT.
#
# Prepare here first (egglog 13.2 and the dependencies the device lacks, as cp312 wheels):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl egglog==13.2.0 black==26.10.1 pytokens==0.4.1 \
#     platformdirs==4.14.9 graphviz==0.21 opentelemetry-api==1.45.2
# then run `bash benchmarks/gpu_session.sh` there with carry [".whl"] (about 7 minutes;
# 2026-12-04 the first run took 381 s with the test step cut at 150 s).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 DNNFUSION_CACHE_DIR=/tmp/dfcache
nvidia-smi -L
date; timeout 240 python3 -m pytest -x -q -p no:cacheprovider tests/test_pallas_backend.py \
    > "$OUT/pytest.log" 2>&1; echo "pytest rc $?"; tail -60 "$OUT/pytest.log"
date; timeout 160 python3 benchmarks/pallas_gpu.py --tune --repeats 10 2>&1 | tee "$OUT/tune.log"
cp /tmp/dfcache/pallas-tuning.json "$OUT/" 2>/dev/null
date; timeout 180 python3 benchmarks/pallas_gpu.py --repeats 20 2>&1 | tee "$OUT/bench.log"
