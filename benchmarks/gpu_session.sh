#!/usr/bin/env bash
# One GPU session in one go (the device tool's machine: jax with CUDA, no egglog, no network):
# the Pallas and half-precision tests on the GPU, tile/GEMM tuning, then the benchmark (float32
# and bf16 rows); logs land in $OUT.
#
# Prepare here first (egglog 13.2 and the dependencies the device lacks, as cp312 wheels):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl egglog==13.2.0 black==26.10.1 pytokens==0.4.1 \
#     platformdirs==4.14.9 graphviz==0.21 opentelemetry-api==1.45.2
# then run `bash benchmarks/gpu_session.sh` there with carry [".whl"] (about 9 minutes; the
# benchmark's last rows need more than its 200 s: name the rows to run, or give it longer).
# The tests run at "highest" matmul precision: a GPU's default float32 GEMMs round to TF32,
# which the tests' rtol = 1e-5 does not allow on either side. They are stopped by SIGINT at
# their budget so that pytest still prints the failures it has seen.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 DNNFUSION_CACHE_DIR=/tmp/dfcache
nvidia-smi -L
# Test workers share the GPU: without PREALLOCATE=false each takes 75% of its memory and the
# others fail out of memory. The half-precision file's C tests assume a CPU machine.
date; XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEFAULT_MATMUL_PRECISION=highest \
    timeout -s INT -k 20 200 python3 -m pytest -q -p no:cacheprovider -n 8 --tb=short -rf \
    tests/test_pallas_backend.py tests/test_half_precision.py -k "not c_kernels and not -c] \
    and not integer_and_bool and not round_overflow and not random_half" > "$OUT/pytest.log" 2>&1
echo "pytest rc $?"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest.log" | tail -30
date; timeout 110 python3 benchmarks/pallas_gpu.py --tune --repeats 5 softmax "layer norm" \
    "RMS norm" gelu silu gemm 2>&1 | tee "$OUT/tune.log"
cp /tmp/dfcache/pallas-tuning.json "$OUT/" 2>/dev/null
date; timeout 200 python3 benchmarks/pallas_gpu.py --repeats 20 2>&1 | tee "$OUT/bench.log"
date
