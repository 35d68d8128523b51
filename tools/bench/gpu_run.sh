#!/usr/bin/env bash
# One GPU session: selfcascade (burn-cuda) against PyTorch diffusers (tools/bench/gpu_vs_torch.py).
#   tools/bench/gpu_run.sh BIN_DIR OUT_DIR [extra gpu_vs_torch.py flags]
# BIN_DIR holds `unet_forward` and `selfcascade` built here with `--features cuda`; wheels in .whl/ (e.g.
# diffusers, which the GPU image lacks) are installed first when present.
set -u
BIN=$1; OUT=$2; shift 2
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
# burn-cuda loads the driver (already on the loader's path) and NVRTC at run time. Only NVRTC's folder is
# added, after what is there: the toolkit's stubs/ (a link-time libcuda.so that fails every call) and
# compat/ folders must not come before the real driver.
for d in $(find /usr/local /opt -name 'libnvrtc.so*' 2>/dev/null | grep -v -e /stubs -e /compat | xargs -r -n1 dirname | sort -u); do
  LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:$d
done
export LD_LIBRARY_PATH RUST_BACKTRACE=1
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
chmod +x "$BIN"/* 2>/dev/null
PYTHONUNBUFFERED=1 python3 tools/bench/gpu_vs_torch.py --bin "$BIN" --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
