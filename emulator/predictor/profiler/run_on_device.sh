#!/bin/bash
# How emulator/predictor/data/<sku>/ is measured: one device-tool call on the real GPU.
#
#   here:    python3 emulator/predictor/profiler/fetch_vllm_kernels.py
#   device:  run(command="bash emulator/predictor/profiler/run_on_device.sh [FAMILIES]", carry=[".carry"])
#   here:    tar xzf <files_at>/profile.tgz -C emulator/predictor/data/<sku>
#            revati-tune predictor fit --sku <sku>
#
# FAMILIES (default: every family of profile_gpu.py, then the forward passes) is a comma list;
# "forward_pass" names the whole-step measurement. Everything lands in one tarball because the
# device tool returns at most 8 files.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/profile-out}
FAMILIES=${1:-gemm,attention,elementwise,copy,forward_pass}
WORK=/tmp/profile
mkdir -p "$WORK" "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.limit --format=csv
kernel_families=$(echo "$FAMILIES" | tr ',' '\n' | grep -v '^forward_pass$' | paste -sd, -)
status=0
if [ -n "$kernel_families" ]; then
    python3 emulator/predictor/profiler/profile_gpu.py --out "$WORK" --families "$kernel_families" \
        --max-seconds 480 || status=1
fi
if echo "$FAMILIES" | tr ',' '\n' | grep -qx forward_pass; then
    python3 emulator/predictor/profiler/forward_pass.py --out "$WORK/forward_pass" --kernel-profile \
        || status=1
    gzip -f "$WORK/forward_pass/kernels.csv" 2>/dev/null
fi
tar czf "$OUT/profile.tgz" -C "$WORK" .
cp "$WORK/profile.log" "$OUT/" 2>/dev/null
ls -la "$WORK" "$WORK/forward_pass" 2>/dev/null
exit $status
