#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one call (the lease is short):
# the CuPy kernel tests and run.py --device gpu end to end (needs pydicom: carry a wheel if the
# machine lacks it), then the GPU benchmark against PyTorch/cuDNN in FP32 and TF32.
# Usage (repository root): OUT=/some/dir bash bench/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda_kernels.py tests/test_dispatch.py tests/test_model.py \
  tests/test_explain.py tests/test_predict.py::test_predict_on_the_gpu_matches_the_cpu \
  tests/test_pipeline.py::test_run_py_on_the_gpu_matches_the_cpu 2>&1 | tail -15
} > "$OUT/gpu_tests.log" 2>&1
for v in caffe torchvision; do
  python3 bench/bench_alexnet.py --device gpu --variant $v --vs-torch --breakdown --json "$OUT/bench_${v}_fp32.json" > "$OUT/bench_${v}_fp32.log" 2>&1
  python3 bench/bench_alexnet.py --device gpu --variant $v --vs-torch --tf32 --json "$OUT/bench_${v}_tf32.json" > "$OUT/bench_${v}_tf32.log" 2>&1
done
